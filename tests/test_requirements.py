"""Every third-party module the code imports is named in a requirements file.

Why: CI and a new user install only what ``requirements*.txt`` list, in a fresh virtual
environment. A module that happens to be installed on a developer's machine would hide a
missing line until somebody else's ``pytest`` fails at collection.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["unlearn_core", "pages", "scripts", "tests", "app.py"]
REQUIREMENT_FILES = ["requirements.txt", "requirements-dev.txt"]
#: Import names whose distribution is called something else.
DISTRIBUTION_OF = {"PIL": "pillow", "sklearn": "scikit-learn", "openTSNE": "opentsne",
                   "yaml": "pyyaml", "cv2": "opencv-python", "skimage": "scikit-image"}
#: Modules that arrive with a listed distribution (not listed themselves, never imported alone).
PROVIDED_BY = {"_pytest": "pytest", "google": "streamlit", "typing_extensions": "torch"}


def _python_files() -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        path = ROOT / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def _local_modules() -> set[str]:
    local = {p.name for p in ROOT.iterdir() if p.is_dir()} | {p.stem for p in ROOT.glob("*.py")}
    return local | {p.stem for p in (ROOT / "tests").glob("*.py")}


def _imported_top_level(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _listed_distributions() -> set[str]:
    listed: set[str] = set()
    for name in REQUIREMENT_FILES:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                listed.add(re.split(r"[=<>!~\[; ]", line)[0].lower().replace("_", "-"))
    return listed


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-")


def test_every_third_party_import_is_in_a_requirements_file():
    listed = _listed_distributions()
    local = _local_modules()
    missing: dict[str, list[str]] = {}
    for path in _python_files():
        for module in _imported_top_level(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            distribution = PROVIDED_BY.get(module) or DISTRIBUTION_OF.get(module, module)
            if _normalize(distribution) not in listed:
                missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, (
        "Imported but named in no requirements file (a fresh virtual environment would fail): "
        + "; ".join(f"{m} (in {', '.join(sorted(set(f))[:3])})" for m, f in sorted(missing.items())))


def test_the_scan_sees_the_imports_it_must_check():
    """Guards the test above against passing vacuously (for example after a folder is renamed)."""
    seen = set().union(*(_imported_top_level(p) for p in _python_files()))
    assert {"torch", "streamlit", "pytest", "hypothesis", "PIL", "sklearn"} <= seen


def test_every_requirement_is_pinned():
    for name in REQUIREMENT_FILES:
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                assert "==" in line, f"{name}: {line!r} is not pinned to one version"
