"""On a machine with a CUDA device only (skipped elsewhere; it has never run yet): the
CuPy launchers against the host build of the same kernels (GPU.md §6.5, steps 1–3), and
the batched dense derivative on the device without host synchronisation.

Kernels without ``exp``/``log``/``pow`` (orthant, SOC, 3×3 eigen, weights, gathers) in
the ``--fmad=false`` build must equal the host build bit for bit; the FMA build and the
exponential and power kernels (libdevice) must meet the FMA test's tolerances, region
codes agreeing except for points exactly on a cone's boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
from cone_samples import suite_inputs
from kernel_suite import run_all

import diffqcp_np.gpu as gpu

pytestmark = pytest.mark.skipif(not gpu.available(), reason=f"{gpu.device_error()}")

#: Outputs of kernels that do only IEEE + - * / sqrt.
IEEE_ONLY = ("project_nonneg", "jacobian_nonneg", "project_soc", "soc_codes", "soc_ratios",
             "soc_units", "soc_apply", "soc_d", "soc_e", "soc_null", "sym3_lam",
             "sym3_vectors", "sym3_e", "sym3_null", "weights_e", "weights_null", "gather",
             "shifted")


class DeviceFromHost:
    """The device kernels called with NumPy arrays: inputs copied to the device, written
    arrays copied back (so that :func:`kernel_suite.run_all` runs unchanged)."""

    def __init__(self, fmad: bool) -> None:
        from diffqcp_np.gpu._modules import DeviceKernels
        from diffqcp_np.gpu._signatures import KERNELS

        self._kernels, self._table = DeviceKernels(fmad), KERNELS

    def __getattr__(self, name):
        cupy = gpu.require()
        sig, launcher = self._table[name], getattr(self._kernels, name)

        def call(*args):
            device = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
            launcher(*device)
            cupy.cuda.Device().synchronize()
            for param, host, dev in zip(sig.params, args, device):
                if param.pointer and not param.const:
                    host[...] = dev.get()
        return call


@pytest.fixture(scope="module")
def reference(host_kernels):
    inputs = suite_inputs()
    return inputs, run_all(host_kernels, inputs)


def test_no_fma_build_is_bitwise_where_arithmetic_allows(reference):
    inputs, expected = reference
    actual = run_all(DeviceFromHost(fmad=False), inputs)
    for name in IEEE_ONLY:
        assert actual[name].tobytes() == expected[name].tobytes(), name


def test_fma_build_within_tolerances(reference):
    inputs, expected = reference
    actual = run_all(DeviceFromHost(fmad=True), inputs)
    for kind, tol in (("exp", 1e-12), ("power", 1e-10)):
        v = inputs[f"{kind}_v"].reshape(-1, 3)
        scale = np.abs(v).max(axis=1, keepdims=True)
        diff = np.abs(actual[f"project_{kind}"] - expected[f"project_{kind}"]).reshape(-1, 3)
        assert np.all(diff <= 1e-13 * scale), kind
        assert np.max(np.abs(actual[f"jacobian_{kind}"] - expected[f"jacobian_{kind}"])) <= tol


def test_sparse_products_and_batched_eigh():
    cupy = gpu.require()
    import cupyx.scipy.sparse as csp
    import scipy.sparse as sp

    from diffqcp_np.gpu import psd

    rng = np.random.default_rng(0)
    A = sp.random(300, 200, density=0.05, random_state=rng, format="csr")
    x, y = rng.standard_normal(200), rng.standard_normal(300)
    A_dev, AT_dev = csp.csr_matrix(A), csp.csr_matrix(A.T.tocsr())
    for dev, host in ((A_dev @ cupy.asarray(x), A @ x), (AT_dev @ cupy.asarray(y), A.T @ y)):
        np.testing.assert_allclose(dev.get(), host, rtol=1e-14, atol=1e-14)
    for k in (5, 40):
        X = rng.standard_normal((30, k * (k + 1) // 2))
        np.testing.assert_allclose(psd.project(cupy.asarray(X), k, cupy).get(),
                                   psd.project(X, k, np), rtol=0, atol=1e-12 * np.abs(X).max())
