"""The built-in data sets are the same bits on every CPU.

Each built-in set is regenerated in subprocesses that turn off, one at a time, the optional
SIMD groups numpy found on this machine (``NPY_DISABLE_CPU_FEATURES``; on an AVX-512 machine
that is AVX512_SPR, AVX512_ICL, X86_V4 and X86_V3 in turn, here whatever ``show_runtime()``
lists as found), and once with PyTorch held to its plain kernels (``ATEN_CPU_CAPABILITY=default``).
Every fingerprint must equal the one recorded in the shipped demo model, so a user on any
processor regenerates exactly the data the shipped model was trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from unlearn_core.assets import demo_model_path
from unlearn_core.data.builtin import BUILTIN_SETS, load_builtin
from unlearn_core.data.pixel_audit import structure_fingerprint
from unlearn_core.data.synthetic import exact_math
from unlearn_core.models.weights import file_metadata

ROOT = Path(__file__).resolve().parent.parent
GENERATE = (
    "import json, sys\n"
    "from unlearn_core.data.builtin import load_builtin\n"
    "from unlearn_core.data.pixel_audit import structure_fingerprint\n"
    "out = {}\n"
    "for name in sys.argv[1:]:\n"
    "    d = load_builtin(name)\n"
    "    out[name] = [d.fingerprint(), structure_fingerprint(d.images, d.metadata, d.classes)]\n"
    "print(json.dumps(out))\n"
)


def simd_restrictions() -> list[str]:
    """``NPY_DISABLE_CPU_FEATURES`` values: each optional group found here, with the groups
    dispatched after it (which build on it), so numpy accepts the combination."""
    found = _simd()["found"]
    return [" ".join(found[i:]) for i in range(len(found))]


def _simd() -> dict[str, list[str]]:
    """numpy's public report of its SIMD groups: baseline, found (dispatched to here), not found."""
    return np.show_config(mode="dicts")["SIMD Extensions"]


def _generate(env_changes: dict[str, str]) -> dict[str, list[str]]:
    # The disk cache is off: each subprocess must generate the data itself under its SIMD level.
    env = {**os.environ, **env_changes, "PYTHONPATH": str(ROOT), "UNLEARN_STUDIO_DATA_CACHE": "off"}
    done = subprocess.run([sys.executable, "-c", GENERATE, *BUILTIN_SETS], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _recorded(name: str) -> tuple[str, str | None]:
    meta = file_metadata(demo_model_path(name))
    return meta["data_fingerprint"], meta.get("data_structure")


@pytest.mark.slow
def test_every_simd_level_regenerates_the_data_the_shipped_models_saw():
    settings = [{"NPY_DISABLE_CPU_FEATURES": value} for value in simd_restrictions()]
    settings.append({"ATEN_CPU_CAPABILITY": "default"})
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two sets of generators at once
        results = list(pool.map(_generate, settings))
    for setting, fingerprints in zip(settings, results):
        for name, (fingerprint, structure) in fingerprints.items():
            recorded_fingerprint, recorded_structure = _recorded(name)
            assert fingerprint == recorded_fingerprint, f"{name} differs under {setting}"
            assert structure == recorded_structure, f"{name} metadata differ under {setting}"


@pytest.mark.parametrize("name", list(BUILTIN_SETS))
def test_this_process_regenerates_the_data_the_shipped_model_saw(name):
    data = load_builtin(name)
    assert (data.fingerprint(), structure_fingerprint(data.images, data.metadata, data.classes)) \
        == _recorded(name)


def test_simd_restrictions_are_what_numpy_accepts():
    """Each restriction names only optional groups found on this CPU, never the baseline."""
    simd = _simd()
    assert simd_restrictions() or not simd["found"]
    for value in simd_restrictions():
        assert all(group in simd["found"] and group not in simd["baseline"] for group in value.split())


# --- the exact elementary functions ------------------------------------------------------------
def test_exact_math_is_accurate():
    rng = np.random.default_rng(0)
    x = rng.uniform(-30, 30, 20_000)
    positive = rng.uniform(1e-6, 1e3, 20_000)
    y, z = rng.uniform(-5, 5, 20_000), rng.uniform(-5, 5, 20_000)
    np.testing.assert_allclose(exact_math.exp(x), np.exp(x), rtol=1e-15)
    np.testing.assert_allclose(exact_math.log(positive), np.log(positive), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(exact_math.power(positive, 1.3), positive ** 1.3, rtol=1e-13)
    np.testing.assert_allclose(exact_math.sin(x), np.sin(x), atol=1e-15)
    np.testing.assert_allclose(exact_math.cos(x), np.cos(x), atol=1e-15)
    np.testing.assert_allclose(exact_math.arctan2(y, z), np.arctan2(y, z), atol=1e-15)
    corners = np.array([0.0, 1.0, -1.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(exact_math.arctan2(*corners), np.arctan2(*corners))
    assert exact_math.power(np.array([0.0]), 2.0)[0] == 0.0
    assert exact_math.log(np.array([0.0]))[0] == -np.inf


def test_exact_math_gives_the_same_bits_under_every_simd_level():
    """The functions use only exactly rounded operations: bits agree whatever numpy dispatches."""
    code = ("import numpy as np, hashlib\n"
            "from unlearn_core.data.synthetic import exact_math as m\n"
            "x = np.linspace(-40, 40, 100_003)\n"
            "parts = [m.exp(x), m.log(np.abs(x) + 1e-3), m.power(np.abs(x), 0.37), m.sin(x), m.cos(x),"
            " m.arctan2(x, x[::-1]), m.hypot(x, 1.5)]\n"
            "print(hashlib.sha256(b''.join(p.tobytes() for p in parts)).hexdigest())\n")
    digests = set()
    for value in ["", *simd_restrictions()]:
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": value, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.strip())
    assert len(digests) == 1
