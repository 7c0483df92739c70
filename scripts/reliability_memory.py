"""Print the peak memory of refusing each hostile upload (the figures in docs/reliability.md).

Each upload (zip bombs, forged headers, huge images, huge .npz shapes; built by
``tests/hostile_files.py`` from a few kilobytes of compressed zeros) goes through the
dashboard's upload path in a fresh Python process; the figure is that process's peak resident
memory (``ru_maxrss``), library imports included, and, in brackets, what the upload itself
added. Usage::

    python scripts/reliability_memory.py            # a markdown table on stdout
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hostile_files  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        paths = hostile_files.write_all(Path(folder))
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        results = hostile_files.measure(paths, fresh=True)
    print("| upload | file size | refused | peak memory (process) | added by the upload | message |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name, entry in results.items():
        peak, own = entry["peak_mib"], entry["peak_mib"] - entry["start_mib"]
        worst = max(worst, peak)
        message = entry["message"].split(". ")[0].replace("|", "/")[:110]
        print(f"| `{name}` | {sizes[name] / 1024:,.0f} KiB | {'yes' if entry['refused'] else 'NO'} | "
              f"{peak * 1.048576:,.0f} MB | {own * 1.048576:,.0f} MB | {message} |")
    print(f"\nhighest peak: {worst * 1.048576:,.0f} MB (limit 1,500 MB)")
    return 0 if all(e["refused"] for e in results.values()) and worst * 1.048576 < 1500 else 1


if __name__ == "__main__":
    raise SystemExit(main())
