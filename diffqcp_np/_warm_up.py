"""Compile every Numba kernel once, ahead of the first real call.

The kernels are compiled on first use and cached on disk (``cache=True``), so a fresh
install pays the compilation in its first calls. :func:`warm_up` pays it at once: it runs
small problems chosen so that together they reach every kernel (every cone, the
diagonal, block, lifted, dense-block and equilibrated reduced systems, the LU and
dense systems, batches, the forward solvers), reporting progress. Later processes load
the kernels from the cache.

Run it with ``python -m diffqcp_np --warm-up``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator, TextIO

import numpy as np
import scipy.sparse as sp

#: Modules that need an optional framework (a layer adapter's) and define no kernel.
FRAMEWORK_MODULES = frozenset({"diffqcp_np.jax_layer", "diffqcp_np.torch_layer"})


def _dispatchers() -> dict[str, object]:
    """Every Numba dispatcher defined in the package, by qualified name (the modules of
    :data:`FRAMEWORK_MODULES` are not imported)."""
    from numba.core.dispatcher import Dispatcher

    found = {}
    package = importlib.import_module("diffqcp_np")
    for info in pkgutil.walk_packages(package.__path__, "diffqcp_np."):
        if info.name in FRAMEWORK_MODULES:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def kernels() -> dict[str, object]:
    """Every Numba dispatcher of the package that is compiled on its own, by name.

    Kernels marked ``inline="always"`` are left out: they are compiled into their
    callers.
    """
    return {name: kernel for name, kernel in _dispatchers().items()
            if kernel.targetoptions.get("inline", "never") != "always"}


def _callees(kernel) -> list:
    """The dispatchers that ``kernel``'s code calls by global name."""
    from numba.core.dispatcher import Dispatcher

    func = kernel.py_func
    return [value for name in func.__code__.co_names
            if isinstance(value := func.__globals__.get(name), Dispatcher)]


def not_compiled() -> list[str]:
    """The kernels of :func:`kernels` that no compiled kernel of this process contains.

    A kernel loaded from the cache carries its callees compiled in, without compiling
    them on their own: a kernel counts as reached when it has a compiled signature or
    is called (directly or not) by one that has.
    """
    everything = _dispatchers()
    reached = {id(k) for k in everything.values() if k.signatures}
    frontier = [k for k in everything.values() if k.signatures]
    while frontier:
        for callee in _callees(frontier.pop()):
            if id(callee) not in reached:
                reached.add(id(callee))
                frontier.append(callee)
    return sorted(name for name, kernel in kernels().items() if id(kernel) not in reached)


@dataclass
class _Problem:
    A: sp.csc_matrix
    b: np.ndarray
    c: np.ndarray
    cone_dict: dict
    P: sp.csc_matrix
    x: np.ndarray
    y: np.ndarray
    s: np.ndarray


def _known_solution(cone_dict: dict, n: int | None = None, seed: int = 0,
                    P: sp.csc_matrix | None = None, row_scale: float = 1.0) -> _Problem:
    """A problem with a known, unique, strictly complementary solution: ``y`` and ``s``
    from the Moreau decomposition of a random ``v``, a random square-or-tall ``A``,
    ``P = I`` unless given; the first row is scaled by ``row_scale``."""
    from .cones import as_cone_spec, pi

    rng = np.random.default_rng(seed)
    m = as_cone_spec(cone_dict).dim
    n = m if n is None else n
    v = rng.standard_normal(m)
    y = pi(v, cone_dict, dual=True)
    s = y - v
    A = rng.standard_normal((m, n))
    A[0] *= row_scale
    y[0] /= row_scale
    s[0] *= row_scale
    A = sp.csc_matrix(A)
    P = sp.identity(n, format="csc") if P is None else P
    x = rng.standard_normal(n)
    return _Problem(A, A @ x + s, -(A.T @ y) - P @ x, cone_dict, P, x, y, s)


def _differentiate(problem: _Problem, **options) -> None:
    """Set up the derivative at the known solution, apply it and its adjoint; through the
    LDLᵀ of the reduced system unless ``options`` name another ``factorization`` (the
    problems are small: ``"auto"`` would factor most of them dense, with no kernel)."""
    from .cone_program import derivative

    options.setdefault("factorization", "ldl")
    p = problem
    D, DT = derivative(p.A, p.b, p.c, p.cone_dict, p.x, p.y, p.s, P=p.P, **options)
    D(p.A, p.b, p.c, dP=p.P)
    DT(p.x, p.y, p.s, return_dP=True)
    DT(p.x, None, None)


def _every_cone() -> None:
    from ._sparse import CSCArrays
    from .cones import dpi, pi

    CSCArrays.from_diagonal(np.array([1.0, 0.0, 2.0])).tocsc()

    p = _known_solution({"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "ed": 1, "p": [0.3, -0.4]})
    for dual in (False, True):
        pi(p.y - p.s, p.cone_dict, dual=dual)
        dpi(p.y - p.s, p.cone_dict, dual=dual).matvec(p.b)


def _forward_solvers() -> None:
    from .cone_program import solve_and_derivative

    p = _known_solution({"z": 1, "l": 3, "q": [3]}, n=4)
    for solver in ("SCS", "Clarabel", "ECOS"):
        _, _, _, D, DT = solve_and_derivative(p.A, p.b, p.c, p.cone_dict, solve_method=solver,
                                              P=None if solver == "ECOS" else p.P)
        D(p.A, p.b, p.c)
        DT(np.ones(p.c.size), None, None)


def _batch() -> None:
    from .batch import solve_and_derivative_batch

    for cone_dict, solve_method in (({"z": 1, "l": 3, "q": [3]}, "IPM"),  # interior point
                                    ({"z": 1, "l": 4}, "auto"),  # active set (polyhedral)
                                    ({"z": 1, "l": 3, "q": [3]}, "Clarabel")):
        problems = [_known_solution(cone_dict, n=4, seed=seed) for seed in (1, 2)]
        xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(
            [p.A for p in problems], [p.b for p in problems], [p.c for p in problems],
            [p.cone_dict for p in problems], Ps=[p.P for p in problems], backend="serial",
            solve_method=solve_method)
        D_batch([p.A for p in problems], [p.b for p in problems], [p.c for p in problems],
                dPs=[p.P for p in problems])
        DT_batch(xs, ys, ss, return_dP=True)


def _refinement() -> None:
    """Newton steps of solution refinement from a perturbed solution (the compiled steps on
    zero and orthant cones, the general ones on a second-order cone)."""
    for cone_dict in ({"z": 1, "l": 5}, {"l": 2, "q": [3]}):
        p = _known_solution(cone_dict)
        x = p.x + 1e-7 * np.random.default_rng(5).standard_normal(p.x.size)
        _differentiate(replace(p, x=x), refine=True)


def _dense_trailing_block() -> None:
    n = 80
    rng = np.random.default_rng(3)
    F = rng.standard_normal((n, n))
    _differentiate(_known_solution({"z": 2, "l": n}, n=n, P=sp.csc_matrix(F.T @ F + np.eye(n))))


def _psd_checks() -> None:
    """The positive semidefiniteness check of P on each of its paths: a compiled dense
    Cholesky, LAPACK's, the sparse LDLᵀ (P's that are not diagonally dominant)."""
    from .derivative.convexity import check_positive_semidefinite

    rng = np.random.default_rng(4)
    for n in (8, 60):
        F = rng.standard_normal((n, n))
        check_positive_semidefinite(sp.csc_matrix(F.T @ F))
    B = sp.diags([rng.standard_normal(200 - k) for k in range(3)], range(3), format="csc")
    check_positive_semidefinite(sp.csc_matrix(B.T @ B).sorted_indices())


#: ``(description, task)``: together they reach every kernel of :func:`kernels`.
TASKS: tuple[tuple[str, Callable[[], None]], ...] = (
    ("zero and orthant cones", lambda: _differentiate(_known_solution({"z": 2, "l": 6}))),
    ("second-order cones", lambda: _differentiate(_known_solution({"l": 2, "q": [3, 4]}))),
    ("a large second-order cone (lifted)", lambda: _differentiate(_known_solution({"q": [40]}))),
    ("exponential and power cones", lambda: _differentiate(
        _known_solution({"l": 1, "ep": 1, "ed": 1, "p": [0.3, -0.6]}))),
    ("PSD cones", lambda: (_differentiate(_known_solution({"l": 30, "s": [3]}),
                                          factorization="auto"),
                           _differentiate(_known_solution({"s": [3]}), factorization="auto"),
                           _differentiate(_known_solution({"l": 2, "s": [3]}),
                                          factorization="ldl"))),
    ("a dense trailing block", _dense_trailing_block),
    ("solution refinement", _refinement),
    ("badly scaled rows (equilibration)", lambda: _differentiate(
        _known_solution({"z": 1, "l": 8}, row_scale=1e-6))),
    ("positive semidefiniteness of P", _psd_checks),
    ("projections and their Jacobians", _every_cone),
    ("forward solvers (SCS, Clarabel, ECOS)", _forward_solvers),
    ("same-structure batches (interior point, active set, Clarabel)", _batch),
)


@contextmanager
def compilations(on_first: Callable[[], None] | None = None) -> Iterator[list[str]]:
    """Collect the names of the package's kernels that Numba compiles inside the block
    (loads from the cache are not compilations).

    Parameters
    ----------
    on_first : callable, optional
        Called when the first compilation starts (before its seconds of work).
    """
    from numba.core import event

    compiled: list[str] = []
    started = [False]

    class Listener(event.Listener):
        def on_start(self, ev):
            if not started[0] and on_first is not None:
                on_first()
            started[0] = True

        def on_end(self, ev):
            func = getattr(ev.data["dispatcher"], "py_func", None)
            if func is not None and func.__module__.startswith("diffqcp_np."):
                compiled.append(f"{func.__module__}.{func.__qualname__}")

    listener = Listener()
    event.register("numba:compile", listener)
    try:
        yield compiled
    finally:
        event.unregister("numba:compile", listener)


def warm_up(out: TextIO | None = sys.stdout) -> dict:
    """Compile (or load from the cache) every kernel of the package.

    Parameters
    ----------
    out : text stream or None
        Where progress goes (a tqdm bar when tqdm is installed, else one line per step);
        None for silence.

    Returns
    -------
    dict
        ``seconds`` (wall time), ``compiled`` (number of kernel compilations: 0 when the
        cache had everything), ``missing`` (kernels no task reached; empty unless the
        package gained a kernel that :data:`TASKS` does not reach).
    """
    start = time.perf_counter()
    bar = _progress_bar(out)
    with compilations() as compiled, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the problems are chosen to be regular
        for k, (description, task) in enumerate(TASKS, 1):
            bar(k, description)
            task()
    bar(None, "")
    return {"seconds": time.perf_counter() - start, "compiled": len(compiled),
            "missing": not_compiled()}


def _progress_bar(out: TextIO | None) -> Callable[[int | None, str], None]:
    """``step(k, description)`` before step k (1-based) and ``step(None, "")`` at the end."""
    if out is None:
        return lambda k, description: None
    total = len(TASKS)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        started = [time.perf_counter()]

        def step(k, description):
            if k is not None:
                elapsed = time.perf_counter() - started[0]
                print(f"[{k:2d}/{total}] {description} (at {elapsed:.0f} s)", file=out,
                      flush=True)
        return step
    bar = tqdm(total=total, file=out, unit="step", desc="compiling")

    def step(k, description):
        if k is None:
            bar.update(1)
            bar.close()
            return
        if k > 1:
            bar.update(1)
        bar.set_postfix_str(description)
    return step
