"""The GPU path's optional dependencies: importing never needs them, missing ones give
a clear error naming the extra to install, the kernels ship as package data."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import types
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

import diffqcp_np.gpu as gpu
from diffqcp_np import backend
from diffqcp_np.backend import deps
from diffqcp_np.gpu._modules import DeviceKernels, kernel_source
from diffqcp_np.gpu._signatures import SOURCES

ROOT = Path(__file__).parents[2]
HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.fixture
def fresh_probes(monkeypatch):
    """Probe caches emptied before and after the test; the GPU switch unset."""
    monkeypatch.delenv(deps.DISABLE_GPU_VARIABLE, raising=False)
    deps._import.cache_clear()
    deps._device_problem.cache_clear()
    yield
    deps._import.cache_clear()
    deps._device_problem.cache_clear()


def test_import_needs_no_gpu_packages():
    code = ("import sys, numpy as np, diffqcp_np, diffqcp_np.gpu, diffqcp_np.backend as b; "
            "b.array_module(np.zeros(2)); b.to_host(np.zeros(2)); "
            "print(sorted({'cupy', 'cupyx', 'nvmath'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_without_cupy_the_error_names_the_extras(fresh_probes):
    assert gpu.available() is False
    message = gpu.device_error()
    assert "cupy is not installed" in message
    assert "diffqcp_np[gpu-cu12]" in message and "diffqcp_np[gpu-cu13]" in message
    with pytest.raises(gpu.GPUUnavailableError, match=r"gpu-cu12"):
        gpu.require()
    with pytest.raises(gpu.GPUUnavailableError, match=r"gpu-cu12"):
        backend.to_device(np.zeros(3))
    assert gpu.versions()["cupy"] is None


class _FakeDriverError(RuntimeError):
    pass


def _fake_cupy_without_driver() -> types.ModuleType:
    """A stand-in for CuPy on a machine without a driver: imports, no device."""
    cupy = types.ModuleType("cupy")
    cupy.__spec__ = importlib.machinery.ModuleSpec("cupy", None)
    cupy.__version__ = "14.2.0"

    def device_count():
        raise _FakeDriverError("cudaErrorInsufficientDriver: CUDA driver version is "
                               "insufficient for CUDA runtime version")

    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=device_count, runtimeGetVersion=lambda: 12090),
        nvrtc=types.SimpleNamespace(getVersion=lambda: (12, 9)))
    return cupy


def test_with_cupy_but_no_driver_the_error_says_so(fresh_probes, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy_without_driver())
    assert gpu.available() is False
    message = gpu.device_error()
    assert message.startswith("CuPy finds no CUDA device (_FakeDriverError: "
                              "cudaErrorInsufficientDriver")
    assert "NVIDIA GPU with its driver" in message
    with pytest.raises(gpu.GPUUnavailableError, match="no CUDA device"):
        gpu.require()
    assert gpu.versions()["cupy"] == "14.2.0"


@pytest.mark.skipif(not HAS_CUPY, reason="CuPy is not installed here")
def test_real_cupy_without_a_device(fresh_probes):
    cupy = pytest.importorskip("cupy")
    if cupy.is_available():
        pytest.skip("a CUDA device is present")
    assert gpu.available() is False
    assert gpu.device_error().startswith("CuPy finds no CUDA device")
    assert gpu.versions()["cupy"] == cupy.__version__


def test_disable_switch(fresh_probes, monkeypatch):
    monkeypatch.setenv(deps.DISABLE_GPU_VARIABLE, "1")
    assert gpu.available() is False
    assert deps.DISABLE_GPU_VARIABLE in gpu.device_error()
    assert deps.DISABLE_GPU_VARIABLE in deps.nvmath_problem()
    fake_device_array = type("ndarray", (), {"__module__": "cupy"})()
    with pytest.raises(gpu.GPUUnavailableError, match=deps.DISABLE_GPU_VARIABLE):
        backend.array_module(np.zeros(2), fake_device_array)
    monkeypatch.setenv(deps.DISABLE_GPU_VARIABLE, "0")
    assert not deps.gpu_disabled()


def test_nvmath_probe(fresh_probes, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvmath", None)  # as if its import failed
    assert "nvmath" in deps.nvmath_problem()


def test_array_module_and_host_copies():
    xp_strict = pytest.importorskip("array_api_strict")
    x = np.arange(3.0)
    assert backend.array_module() is np and backend.array_module(x, 1.0) is np
    assert backend.array_module(xp_strict.asarray([1.0])) is xp_strict
    assert backend.to_host(x) is x
    np.testing.assert_array_equal(backend.to_host([1, 2]), [1, 2])
    assert not backend.is_device_array(x)


def test_device_launchers_refuse_host_arrays():
    v = np.zeros(4)
    with pytest.raises(TypeError, match="project_nonneg: v must be a CuPy array"):
        DeviceKernels().project_nonneg(v, 4, v)
    with pytest.raises(AttributeError):
        DeviceKernels().no_such_kernel  # noqa: B018


def test_kernels_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["diffqcp_np.gpu"]
    for source in (*SOURCES, "_prelude.cu"):
        assert any(fnmatch(f"kernels/{source}", p) for p in patterns)
        assert kernel_source(source)  # readable through importlib.resources
    extras = config["project"]["optional-dependencies"]
    assert extras["gpu-cu12"] == ["cupy-cuda12x>=14,<15", "nvmath-python[cu12]==1.0.*"]
    assert extras["gpu-cu13"] == ["cupy-cuda13x>=14,<15", "nvmath-python[cu13]==1.0.*"]
