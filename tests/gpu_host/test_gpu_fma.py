"""The kernels built with fused multiply-adds (``-mfma -ffp-contract=fast``), as NVRTC
and nvcc build them by default: results within a few rounding errors of the IEEE
build, region codes equal except for points exactly on a cone's boundary.

The host compiler's contractions approximate, not reproduce, the GPU compilers'; the
tolerances here are what a GPU run of the FMA build should meet.
"""

from __future__ import annotations

import numpy as np
import pytest
from cone_samples import suite_inputs
from kernel_suite import run_all


def _has_fma() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii") as f:
            return " fma " in f.read()
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_fma(), reason="this CPU has no FMA instructions")


@pytest.fixture(scope="module")
def results(host_kernels, fma_kernels):
    inputs = suite_inputs()
    return inputs, run_all(host_kernels, inputs), run_all(fma_kernels, inputs)


def per_cone_max(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(np.abs(values), offsets[:-1])


def test_soc(results):
    inputs, ieee, fma = results
    v, offsets = inputs["soc_v"], inputs["soc_offsets"]
    cone = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    scale = per_cone_max(v, offsets)[cone]
    assert np.all(np.abs(ieee["project_soc"] - fma["project_soc"]) <= 1e-14 * scale)
    # codes may flip only where |t| equals ||z|| to rounding (a non-differentiable point)
    t = v[offsets[:-1]]
    tail = np.sqrt(np.add.reduceat((v / scale) ** 2, offsets[:-1]) - (t / scale[offsets[:-1]]) ** 2)
    on_boundary = np.abs(np.abs(t) / scale[offsets[:-1]] - tail) <= 1e-14
    flipped = ieee["soc_codes"] != fma["soc_codes"]
    assert not np.any(flipped & ~on_boundary)
    keep = np.repeat(~flipped, np.diff(offsets))
    for name in ("soc_units", "soc_d", "soc_e", "soc_null"):
        if name == "soc_units":
            a, b = ieee[name][keep], fma[name][keep]
        else:  # block layouts: compare whole arrays of cones whose codes agree
            if flipped.any():
                continue
            a, b = ieee[name], fma[name]
        assert np.max(np.abs(a - b), initial=0.0) <= 1e-14, name
    x_scale = np.max(np.abs(inputs["soc_x"]))
    assert np.max(np.abs(ieee["soc_apply"] - fma["soc_apply"])[keep]) <= 1e-14 * x_scale


@pytest.mark.parametrize("kind,jacobian_tol", [("exp", 1e-12), ("power", 1e-10)])
def test_exp_and_power(results, kind, jacobian_tol):
    inputs, ieee, fma = results
    v = inputs[f"{kind}_v"].reshape(-1, 3)
    scale = np.abs(v).max(axis=1, keepdims=True)
    diff = np.abs(ieee[f"project_{kind}"] - fma[f"project_{kind}"]).reshape(-1, 3)
    assert np.all(diff <= 1e-14 * scale)
    # Jacobian entries lie in [-1, 1]; the worst cases are ill-conditioned roots
    # (power cones with alpha within 1e-9 of 1)
    assert np.max(np.abs(ieee[f"jacobian_{kind}"] - fma[f"jacobian_{kind}"])) <= jacobian_tol


def test_sym3(results):
    inputs, ieee, fma = results
    blocks = inputs["sym3"].reshape(-1, 3, 3)
    upper = np.triu(blocks) + np.swapaxes(np.triu(blocks, 1), 1, 2)
    scale = np.maximum(np.abs(blocks).max(axis=(1, 2)), np.finfo(float).tiny)
    for out in (ieee, fma):  # eigenvectors of repeated eigenvalues differ: compare V Λ V'
        lam, V = out["sym3_lam"].reshape(-1, 3), out["sym3_vectors"].reshape(-1, 3, 3)
        rebuilt = (V * lam[:, None, :]) @ np.swapaxes(V, 1, 2)
        assert np.all(np.abs(rebuilt - upper).max(axis=(1, 2)) <= 1e-14 * scale)
    finite = scale < 1e100  # E of huge blocks overflows in both builds alike
    for name in ("sym3_e", "sym3_null"):
        diff = np.abs(ieee[name].reshape(-1, 9)[finite] - fma[name].reshape(-1, 9)[finite])
        assert np.max(diff) <= 1e-13, name


def test_gather(results):
    inputs, ieee, fma = results
    for name in ("gather", "shifted"):
        scale = np.max(np.abs(ieee[name]))
        assert np.max(np.abs(ieee[name] - fma[name])) <= 1e-14 * max(scale, 1.0) * 8
