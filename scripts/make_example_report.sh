#!/usr/bin/env bash
# Make docs/example_report.html (the audit report of a real demo run, with t-SNE panels) and
# docs/runs_list.txt. The HTML inlines plotly.js (~5 MB), so it is generated, not committed.
# Run from the repository root: bash scripts/make_example_report.sh  (a few minutes on a CPU)
set -euo pipefail
export UNLEARN_STUDIO_HOME="${UNLEARN_STUDIO_HOME:-$(mktemp -d)}"
python -m unlearn_core unlearn --dataset oculoplastic \
  --forget 'vpf_mm >= 12 and label == "thyroid eye disease"' --method psg \
  --set epochs=6 --set lr=0.002 --set inner_steps=2 --set relabel=once --set target_forget_acc=0.1 \
  --retrain --label "demo: forget VPF >= 12 mm TED" --json > "$UNLEARN_STUDIO_HOME/example_run.json"
RUN_ID=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['run_id'])" "$UNLEARN_STUDIO_HOME/example_run.json")
# Save the run's t-SNE decision regions with it (the Results page does the same), for the report.
python -m unlearn_core runs embed "$RUN_ID"
python -m unlearn_core runs export "$RUN_ID" --format html --out docs/example_report.html
python -m unlearn_core runs list > docs/runs_list.txt
echo "wrote docs/example_report.html for run $RUN_ID"
