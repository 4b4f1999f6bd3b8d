"""The kernel suite under AddressSanitizer and UndefinedBehaviorSanitizer.

The instrumented host build runs in a subprocess (the sanitizer runtime must be loaded
first, before Python's own libraries), on every awkward sample and three launch
geometries; its outputs must equal the plain build's bit for bit, and the sanitizers
must report nothing. Two controls show that the instrumentation is live: an SOC whose
offsets run past the end of its vector, and a signed overflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cone_samples import suite_inputs
from host_build import build, compiler
from kernel_suite import run_all

HERE = Path(__file__).parent
GEOMETRIES = [None, (1, 1), (3, 7)]

_RUN_SUITE = """
import json, sys
import numpy as np
from host_build import HostKernels
from kernel_suite import run_all
inputs = dict(np.load(sys.argv[2]))
kernels = HostKernels(sys.argv[1])
outputs = {}
for g, geometry in enumerate(json.loads(sys.argv[4])):
    k = kernels if geometry is None else kernels.with_geometry(*geometry)
    for name, value in run_all(k, inputs).items():
        outputs[f"{g}:{name}"] = value
np.savez(sys.argv[3], **outputs)
"""

_OUT_OF_BOUNDS = """
import numpy as np, sys
from host_build import HostKernels
v, offsets, out = np.ones(5), np.array([0, 3, 7]), np.zeros(5)
HostKernels(sys.argv[1]).project_soc(v, offsets, 2, out)
"""


def _runtime_library(name: str) -> str | None:
    path = subprocess.run([compiler(), f"-print-file-name={name}"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def sanitized(host_build_dir):
    if _runtime_library("libasan.so") is None:
        pytest.skip("the compiler has no AddressSanitizer runtime")
    try:
        return build("sanitize", host_build_dir)
    except RuntimeError as exc:
        pytest.skip(f"no sanitizer build: {exc}")


def run_sanitized(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LD_PRELOAD=_runtime_library("libasan.so"),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_suite_is_clean_and_equal_under_sanitizers(sanitized, host_kernels, tmp_path):
    inputs = suite_inputs()
    np.savez(tmp_path / "inputs.npz", **inputs)
    result = run_sanitized(_RUN_SUITE, str(sanitized), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "outputs.npz"), json.dumps(GEOMETRIES))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr
    outputs = np.load(tmp_path / "outputs.npz")
    expected = run_all(host_kernels, inputs)
    for g in range(len(GEOMETRIES)):
        for name, value in expected.items():
            actual = outputs[f"{g}:{name}"]
            assert actual.tobytes() == value.tobytes(), (g, name)


def test_address_sanitizer_reports_an_out_of_bounds_read(sanitized):
    result = run_sanitized(_OUT_OF_BOUNDS, str(sanitized))
    assert result.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in result.stderr
    assert "soc_norm_tail" in result.stderr


def test_undefined_behaviour_sanitizer_is_live(host_build_dir):
    source = 'extern "C" int dq_overflow(int x) { return x + 2147483647; }\n'
    lib = build("sanitize", host_build_dir / "ub", source=source)
    code = ("import ctypes, sys; f = ctypes.CDLL(sys.argv[1]).dq_overflow; "
            "f.argtypes = [ctypes.c_int]; f(1)")
    result = run_sanitized(code, str(lib))
    assert result.returncode != 0
    assert "runtime error: signed integer overflow" in result.stderr
