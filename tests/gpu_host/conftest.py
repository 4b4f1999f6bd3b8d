"""Fixtures of the GPU tests that run without a GPU: host builds of the CUDA kernels,
compiled once per test session."""

from __future__ import annotations

import pytest
from host_build import HostKernels, build, compiler


@pytest.fixture(scope="session")
def host_build_dir(tmp_path_factory):
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++ or $CXX) to build the CUDA kernels with")
    return tmp_path_factory.mktemp("gpu_host_build")


@pytest.fixture(scope="session")
def host_kernels(host_build_dir) -> HostKernels:
    """The kernels built with g++ -O2 (no FMA contraction), default launch geometry."""
    return HostKernels(build("serial", host_build_dir))


@pytest.fixture(scope="session")
def fma_kernels(host_build_dir) -> HostKernels:
    """The kernels built with FMA contraction (-mfma -ffp-contract=fast), as nvcc and
    NVRTC contract by default."""
    return HostKernels(build("fma", host_build_dir))
