"""Fixtures shared by the suite: the host build of the CUDA kernels, and the back ends
that the derivative's oracle tests run on.

``backend`` is parametrised over

* ``cpu``: the CPU path (NumPy, SciPy, Numba), as every other test runs;
* ``stand-in``: the device path (:mod:`diffqcp_np.gpu.api`) on NumPy, with the host
  build of the CUDA kernels and the host stand-ins of cuDSS (the orchestration that a
  GPU runs, without a GPU; skipped without a C++ compiler);
* ``cuda``: the device path on CuPy and cuDSS (skipped without CuPy, nvmath-python and a
  CUDA device).

Each back end takes host arrays and gives host arrays back, so that one test body
checks all three against the same oracle.

``small_system_path`` (autouse) sends every in-process derivative through the LDLᵀ of
the reduced system whatever the size of K, as for K above ``SMALL_SYSTEM_N`` rows: most
of the suite's problems are small enough that ``factorization="auto"`` would factor them
dense. Modules marked ``both_small_system_paths`` run each test on both paths.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import scipy.sparse as sp
from gpu_host.host_build import HostKernels, build, compiler

import diffqcp_np
import diffqcp_np.gpu as gpu
from diffqcp_np.backend import nvmath_problem
from diffqcp_np.derivative import solution_map
from diffqcp_np.gpu import engine as engines

BACKENDS = ("cpu", "stand-in", "cuda")


@pytest.fixture(scope="session")
def host_build_dir(tmp_path_factory):
    if compiler() is None:
        pytest.skip("no host C++ compiler (g++ or $CXX) to build the CUDA kernels with")
    return tmp_path_factory.mktemp("gpu_host_build")


@pytest.fixture(scope="session")
def host_kernels(host_build_dir) -> HostKernels:
    """The kernels built with g++ -O2 (no FMA contraction), default launch geometry."""
    return HostKernels(build("serial", host_build_dir))


def cuda_problem() -> str | None:
    """Why the ``cuda`` back end cannot run here, or None."""
    return gpu.device_error() or nvmath_problem()


class Backend:
    """One back end of :func:`diffqcp_np.derivative` (see the module docstring).

    Attributes
    ----------
    name : str
    engine : Engine or None
        The device path's engine (None on the CPU).
    wraps : bool
        Whether ``D`` and ``DT`` are wrapped to convert arrays (then a warning's
        location is this file, not the test's).
    """

    def __init__(self, name: str, engine: Any = None) -> None:
        self.name, self.engine = name, engine
        self.wraps = name == "cuda"

    @property
    def on_device(self) -> bool:
        return self.name != "cpu"

    def supports(self, mode: str) -> bool:
        """Whether this back end has derivative mode ``mode``."""
        return not self.on_device or mode == "direct"

    def context(self):
        return engines.use(self.engine) if self.name == "stand-in" else contextlib.nullcontext()

    def to_backend(self, x: Any) -> Any:
        if not self.wraps or x is None:
            return x
        import cupy
        import cupyx.scipy.sparse as csp

        if sp.issparse(x):
            return csp.csc_matrix(sp.csc_matrix(x))
        return cupy.asarray(x)

    def to_host(self, x: Any) -> Any:
        return x.get() if self.wraps and hasattr(x, "get") else x

    def derivative(self, A, b, c, cone_dict, x, y, s, P=None, **kwargs):
        """``D, DT`` of :func:`diffqcp_np.derivative` on this back end (host arrays)."""
        if self.on_device:
            kwargs.setdefault("device", "cuda")
        args = [self.to_backend(v) for v in (A, b, c)]
        point = [self.to_backend(v) for v in (x, y, s)]
        with self.context():
            D, DT = diffqcp_np.derivative(*args, cone_dict, *point, P=self.to_backend(P),
                                          **kwargs)
        if not self.wraps:
            return D, DT

        def jvp(dA=None, db=None, dc=None, dP=None, **kw):
            out = D(*(self.to_backend(v) for v in (dA, db, dc)), dP=self.to_backend(dP), **kw)
            return tuple(self.to_host(v) for v in out)

        def vjp(dx=None, dy=None, ds=None, return_dP=False, **kw):
            out = DT(*(self.to_backend(v) for v in (dx, dy, ds)), return_dP=return_dP, **kw)
            return tuple(self.to_host(v) for v in out)

        return jvp, vjp


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    """The back ends of the derivative (see the module docstring), skipped where they
    cannot run."""
    if request.param == "cpu":
        return Backend("cpu")
    if request.param == "stand-in":
        return Backend("stand-in", engines.host_engine(request.getfixturevalue("host_kernels")))
    problem = cuda_problem()
    if problem is not None:
        pytest.skip(f"no CUDA back end: {problem}")
    return Backend("cuda", engines.device_engine())


#: The paths of ``small_system_path``: LDLᵀ of the reduced system at every size, and the
#: default routing (K with at most ``SMALL_SYSTEM_N`` rows assembled and factored dense).
SMALL_SYSTEM_PATHS = ("ldl", "dense")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_small_system_paths"):
        metafunc.parametrize("small_system_path", SMALL_SYSTEM_PATHS, indirect=True)


@pytest.fixture(autouse=True)
def small_system_path(request, monkeypatch) -> str:
    """The derivative's path for small K (see the module docstring)."""
    path = getattr(request, "param", "ldl")
    if path == "ldl":
        monkeypatch.setattr(solution_map, "SMALL_SYSTEM_N", 0)
    return path


@pytest.fixture
def fresh_structures():
    """The device path's structure cache emptied before and after the test."""
    from diffqcp_np.gpu.structure import STRUCTURE_CACHE

    STRUCTURE_CACHE.clear()
    yield STRUCTURE_CACHE
    STRUCTURE_CACHE.clear()


def pytest_sessionfinish(session, exitstatus):
    """Stop the process back end's pool (its workers terminated): a pool that a failed or
    timed-out test left in a bad state cannot keep the interpreter from exiting."""
    from diffqcp_np.batch.runner import PROCESS_POOLS

    pool = PROCESS_POOLS._pool
    if pool is not None:
        PROCESS_POOLS.discard(pool)
