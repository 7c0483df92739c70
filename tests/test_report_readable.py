"""The HTML report for people (issue 15, item 7): charts whose axes show their numbers and whole
labels, the preset named as the dashboard names it, and tables without raw floats or "None".

Runs are registered by hand (the helpers of test_report.py); the one browser check renders the
report in headless Chromium when it is installed (as the real-browser test does) and measures
the drawn labels.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from test_report import CRITERIA, _metrics, _unlearn_run
from unlearn_core import report
from unlearn_core.labels import NO_PRESET
from unlearn_core.runs.registry import Workspace, cli_command

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


def _with_preset(ws: Workspace, preset: str):
    record = _unlearn_run(ws)
    argv = ["unlearn", "--dataset", "oculoplastic", "--forget", CRITERIA, "--method", "psg", "--preset", preset]
    ws.update(record.id, command=cli_command(argv))
    return ws.get(record.id)


# ---------------------------------------------------------------------- the preset

def test_the_preset_is_named_as_on_the_unlearn_page(ws):
    # one name, shown by the Unlearn page's picker and by the report (read from the source: the
    # dashboard's modules import Streamlit and the data sets, seconds this test need not spend)
    picker = (Path(__file__).resolve().parents[1] / "unlearn_core" / "ui" / "method_settings.py").read_text()
    assert "from unlearn_core.labels import NO_PRESET" in picker and "NO_PRESET = " not in picker
    assert NO_PRESET == "(the method's defaults)"
    plain = _unlearn_run(ws)
    page = report.render_run_report(plain, ws, charts=False)
    assert f"Preset: <strong>{NO_PRESET.replace(chr(39), '&#x27;')}</strong>" in page
    assert "Preset: none" not in page
    named = _with_preset(ws, "boundary_shrink")
    assert "Preset: <strong>boundary_shrink</strong>" in report.render_run_report(named, ws, charts=False)
    both = report.render_comparison_report([plain.id, named.id], ws, charts=False)
    assert "preset (the method&#x27;s defaults)" in both and "preset boundary_shrink" in both


# ---------------------------------------------------------------------- tables

def test_settings_tables_show_dashes_and_short_numbers(ws):
    metrics = _metrics()
    metrics["config"] = {**metrics["config"], "lr": 0.0020000000000000005, "stop_at": None, "phi": 10.0}
    record = _unlearn_run(ws, metrics=metrics)
    page = report.render_run_report(record, ws, charts=False)
    method = page[page.index('id="method"'):page.index("</section>", page.index('id="method"'))]
    cells = re.findall(r"<td>(.*?)</td>", method)
    assert any('<span class="mono">—</span>' in c for c in cells)  # stop_at: unset
    assert any('<span class="mono">0.002</span>' in c for c in cells)
    assert any('<span class="mono">10</span>' in c for c in cells)
    text = re.sub(r"<[^>]+>", " ", method)
    assert "null" not in text and "None" not in text and "0.0020000" not in text


# ---------------------------------------------------------------------- charts

def test_accuracy_charts_write_out_their_ticks_and_make_room_for_labels():
    blocks = {name: {k: v for k, v in block.items()} for name, block in _metrics().items()
              if name in ("original", "retrain", "unlearned")}
    for fig in (report._accuracy_figure(blocks),
                report._per_class_figure({n: b["per_class_test_acc"] for n, b in blocks.items()},
                                         ["healthy", "ptosis", "thyroid eye disease"])):
        axis = fig.layout.yaxis
        assert list(axis.ticktext) == ["0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]
        assert list(axis.tickvals) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        assert axis.automargin is True and fig.layout.xaxis.automargin is True
        assert fig.layout.legend.y > 1  # in a row of its own above the chart, not over the bars
    bars = report._accuracy_figure(blocks)
    categories = list(bars.data[0].x)
    assert categories[0] == "D_f<br>Forget<br>(training)"  # short lines: no clipped or slanted labels
    assert max(len(line) for c in categories for line in c.split("<br>")) <= 10
    assert bars.layout.xaxis.tickangle == 0


def test_comparison_chart_labels_do_not_sit_on_each_other(ws):
    a, b = _unlearn_run(ws, label="first run"), _unlearn_run(ws, label="second run")  # the same point
    columns = [report._comparison_column(r, ws) for r in (a, b)]
    fig = report._comparison_figure([a, b], columns)
    places = [t.textposition for t in fig.data if t.text]
    assert len(places) == 2 and places[0] != places[1]


@pytest.mark.browser
def test_report_charts_drawn_in_a_browser_show_numbers_and_whole_labels(ws, tmp_path):
    """At a phone-like width: every y tick has a number, every category label and the legend lie
    inside the chart, and the legend covers neither the title nor a category label."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    path = tmp_path / "report.html"
    path.write_text(report.render_run_report(_unlearn_run(ws), ws))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 560, "height": 900})
            page.goto(path.as_uri())
            page.wait_for_selector("div.chart .main-svg")
            charts = page.evaluate("""() => [...document.querySelectorAll('div.chart')].slice(0, 2).map(chart => {
                const box = e => { const r = e.getBoundingClientRect();
                                   return [r.left, r.top, r.right, r.bottom]; };
                return {svg: box(chart.querySelector('.main-svg')),
                        yticks: [...chart.querySelectorAll('.ytick text')].map(t => t.textContent),
                        xticks: [...chart.querySelectorAll('.xtick text')].map(box),
                        legend: box(chart.querySelector('.legend')),
                        title: box(chart.querySelector('.gtitle'))};
            })""")
        finally:
            browser.close()
    assert len(charts) == 2

    def inside(box, outer):
        return box[0] >= outer[0] - 1 and box[1] >= outer[1] - 1 and box[2] <= outer[2] + 1 and box[3] <= outer[3] + 1

    def overlap(a, b):
        return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])

    for chart in charts:
        assert chart["yticks"] and all(re.search(r"\d", t) for t in chart["yticks"]), chart["yticks"]
        assert chart["xticks"] and all(inside(t, chart["svg"]) for t in chart["xticks"]), chart
        assert inside(chart["legend"], chart["svg"])
        assert not overlap(chart["legend"], chart["title"])
        assert not any(overlap(chart["legend"], t) for t in chart["xticks"])


def test_a_collapse_in_the_report_names_the_settings_to_change(ws):
    record = _unlearn_run(ws, collapsed=True)  # psg, lr 0.02, 3 epochs
    page = report.render_run_report(record, ws, charts=False)
    assert "Do not deploy this model. Try: halve the learning rate (lr, now 0.02 → 0.01)" in page
    assert "epochs, now 3 → 1" in page


def test_a_compositions_report_lists_its_candidates_with_the_runs_composed(ws):
    from unlearn_core.labels import NOTHING_SAVED
    from unlearn_core.runs.result import RunResult

    parent = _unlearn_run(ws)
    block = RunResult.of(parent)
    candidates = [{"label": "α=0", "metrics": block.unlearned, "distance_to_retrain": 0.2433, "same_as": parent.id},
                  {"label": "α=1", "metrics": {**block.unlearned, "remain_test_acc": 0.5}, "distance_to_retrain": None,
                   "beaten_by": parent.id, "forgetting_lost": True}]
    record = ws.create_run("compose", status="running", dataset="oculoplastic", method="interpolate",
                           parents=[parent.id])
    ws.set_status(record.id, "done", metrics=RunResult(blocks={"original": block.original}, candidates=candidates,
                                                       chosen=None).to_dict())
    page = report.render_run_report(ws.get(record.id), ws)
    label = f"psg {parent.id[-4:]}"
    assert "<h3>Candidates</h3>" in page and f"same as {label}" in page and f"worse than {label}" in page
    assert "0.243" in page and "None" not in re.sub(r"<script.*?</script>", "", page, flags=re.S)
    assert "No candidate improves on the runs it was made from" in page
    assert f"<strong>{html.escape(NOTHING_SAVED)}</strong>" in page  # said plainly, not as an error
    assert '"runs composed"' in page  # the chart's trace of the parents
