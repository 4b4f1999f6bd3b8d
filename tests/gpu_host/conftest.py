"""Fixtures of the GPU tests that run without a GPU (the default host build of the
kernels, ``host_kernels``, is in ``tests/conftest.py``: the back-end tests use it too)."""

from __future__ import annotations

import pytest
from host_build import HostKernels, build


@pytest.fixture(scope="session")
def fma_kernels(host_build_dir) -> HostKernels:
    """The kernels built with FMA contraction (-mfma -ffp-contract=fast), as nvcc and
    NVRTC contract by default."""
    return HostKernels(build("fma", host_build_dir))
