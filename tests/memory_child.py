"""A process that repeats work and reports how much its resident set grew.

``python memory_child.py SCENARIO...`` prints ``growth NAME BYTES COUNT`` per scenario:
the growth of the resident set over ``COUNT`` repetitions, measured after a warm-up
round and with freed memory handed back to the system (``malloc_trim``, where glibc has
it), so that what remains is memory still held. ``release`` prints ``released BYTES
CACHED``: what :func:`diffqcp_np.clear_caches` gave back, and the bytes the analysis
cache reported holding before.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

import diffqcp_np
from diffqcp_np.cones import pi

try:
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    def _trim(_pad: int) -> int:
        return 0


def resident() -> int:
    """Bytes of this process's resident set, after freed memory is returned."""
    gc.collect()
    _trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def lu_factor_across_threads(count: int) -> None:
    """A sparse LU (SuperLU's L and U: about 0.8 MB) made on a worker thread and dropped
    in this one."""
    from diffqcp_np.derivative._sparse_lu import SparseLU

    size = 300
    K = (sp.random(size, size, density=0.05, random_state=np.random.default_rng(0))
         + size * sp.identity(size)).tocsc()
    with ThreadPoolExecutor(1) as worker:
        for _ in range(count):
            factor = worker.submit(SparseLU, K).result()
            del factor


def _psd_problems(count: int) -> list[tuple]:
    """QPs over an orthant and a PSD block (their derivatives take the sparse LU of K),
    each at a point ``(x, y, s)`` built from a random ``v``."""
    cones = {"l": 100, "s": [4]}
    m, n = 110, 60
    out = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        A = (sp.random(m, n, density=0.2, random_state=rng) + sp.eye(m, n)).tocsc()
        F = sp.random(n, n, density=0.2, random_state=rng)
        P = (F @ F.T + 0.1 * sp.identity(n)).tocsc()
        v = rng.standard_normal(m)
        y = pi(v, cones, dual=True)
        x = rng.standard_normal(n)
        s = y - v
        out.append((A, A @ x + s, -(A.T @ y) - P @ x, cones, x, y, s, P))
    return out


def threaded_lu_derivatives(count: int) -> None:
    """Batches of 20 derivatives on new worker threads, as a threaded batch sets them up,
    each applied once (DT) and dropped in this thread."""
    problems = _psd_problems(20)

    def one(problem):
        A, b, c, cones, x, y, s, P = problem
        D, DT = diffqcp_np.derivative(A, b, c, cones, x, y, s, P=P, refine=False)
        DT(np.ones(x.size), None, None)
        return D, DT

    for _ in range(count):
        with ThreadPoolExecutor(2) as pool:
            kept = list(pool.map(one, problems))
        del kept


def _banded_qp(n: int, seed: int) -> tuple:
    """A QP with a banded ``P`` and bounds ``x <= b`` at a point ``(x, y, s)`` from a random
    ``v`` (direct mode: LDLᵀ of M, whose analysis is kept per pattern, i.e. per ``n``)."""
    rng = np.random.default_rng(seed)
    B = sp.diags([rng.standard_normal(n - k) for k in range(3)], range(3))
    P = (B.T @ B + 0.1 * sp.identity(n)).tocsc()
    A = sp.identity(n, format="csc")
    cones = {"l": n}
    v = rng.standard_normal(n)
    y = pi(v, cones, dual=True)
    x = rng.standard_normal(n)
    s = y - v
    return A, A @ x + s, -(A.T @ y) - P @ x, cones, x, y, s, P


def _differentiate_new_patterns(count: int, first: int) -> None:
    """Derivatives (one DT each) of ``count`` QPs of different sizes from ``40000 +
    first``: each a new pattern of M (an analysis of about 6 MB)."""
    for k in range(count):
        A, b, c, cones, x, y, s, P = _banded_qp(40_000 + first + k, k)
        D, DT = diffqcp_np.derivative(A, b, c, cones, x, y, s, P=P)
        DT(np.ones(x.size), None, None)


_patterns_seen = [0]


def new_patterns_under_a_byte_budget(count: int) -> None:
    """New patterns with the analysis cache limited to 16 MiB (its 16 entries would hold
    about 100 MB of them)."""
    diffqcp_np.caches.ldl_analyses.limit(max_bytes=16 * 2**20)
    _differentiate_new_patterns(count, _patterns_seen[0])
    _patterns_seen[0] += count


SCENARIOS = {
    "lu-across-threads": (lu_factor_across_threads, 300),
    "threaded-lu-derivatives": (threaded_lu_derivatives, 25),
    "analysis-byte-budget": (new_patterns_under_a_byte_budget, 24),
}


def release() -> None:
    """Fill the analysis cache with 8 patterns, drop the derivatives, clear the caches."""
    diffqcp_np.caches.ldl_analyses.limit(max_bytes=256 * 2**20)  # the default
    _differentiate_new_patterns(8, 1000)
    cached = diffqcp_np.caches.info()["ldl_analyses"]["bytes"]
    before = resident()
    diffqcp_np.clear_caches()
    print("released", before - resident(), cached, flush=True)


def main(names: list[str]) -> None:
    for name in names:
        if name == "release":
            release()
            continue
        run, count = SCENARIOS[name]
        run(2)  # warm-up: compilation, caches, allocator pools
        before = resident()
        run(count)
        print("growth", name, resident() - before, count, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
