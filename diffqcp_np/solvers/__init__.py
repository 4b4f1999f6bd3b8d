"""Forward solvers for cone programs in SCS form.

One module per solver, registered only when the solver package imports. Every solver
takes the problem in our layout (SCS row order and PSD vectorisation) and returns a
:class:`SolverResult` in that layout, whatever its own conventions.

:func:`solve_cone_program` solves one problem; :class:`BatchSolver` solves the problems
of a batch that share their structure, set up once and given as values
(:mod:`~diffqcp_np.solvers.prepared`).

``solve_method="auto"`` (:func:`resolve_solve_method`) picks the batched dense
interior-point method ``"IPM"`` (:mod:`~diffqcp_np.solvers.batched_ipm`) for the small
problems it covers and SCS otherwise.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import scipy.sparse as sp

from diffqcp_np._validation import as_vector
from diffqcp_np.cones.spec import ConeSpec
from diffqcp_np.solvers.base import (
    SCS_STYLE_STATUS,
    InaccurateSolutionWarning,
    SolverError,
    SolverResult,
)
from diffqcp_np.solvers.prepared import PreparedSolve, SharedPatterns, generic_prepare
from diffqcp_np.solvers.registry import (
    AUTO_FALLBACK,
    available_solvers,
    solver_module,
)

__all__ = [
    "SolverError",
    "SolverResult",
    "InaccurateSolutionWarning",
    "SCS_STYLE_STATUS",
    "BatchSolver",
    "SharedPatterns",
    "available_solvers",
    "resolve_solve_method",
    "solve_cone_program",
]

def resolve_solve_method(solve_method: str, cones: ConeSpec, shape: tuple[int, int],
                         solver_kwargs: dict) -> str:
    """The solver that ``solve_method`` names for a problem (or a same-structure batch).

    ``"auto"`` (case-insensitive) gives ``"IPM"`` where it applies (see
    :func:`~diffqcp_np.solvers.batched_ipm.applies`: zero and nonnegative cones,
    ``n + m`` at most :data:`~diffqcp_np.solvers.batched_ipm.AUTO_MAX_DIM`, every
    keyword one of its settings) and :data:`AUTO_FALLBACK` otherwise; any other name is
    returned as given.
    """
    if str(solve_method).lower() != "auto":
        return solve_method
    from diffqcp_np.solvers import batched_ipm

    return "IPM" if batched_ipm.applies(cones, shape, solver_kwargs) else AUTO_FALLBACK


def check_warm_start(warm_start: tuple, n: int, m: int) -> tuple:
    """``warm_start`` as three float64 vectors ``(x, y, s)`` of lengths n, m, m.

    Raises
    ------
    ValueError, TypeError
        Naming ``warm_start`` (and the vector): not three vectors, wrong lengths, NaN or
        Inf, complex or non-numeric values.
    """
    if not isinstance(warm_start, (tuple, list)) or len(warm_start) != 3:
        raise ValueError(f"warm_start must be a tuple (x, y, s), got {type(warm_start).__name__}")
    return tuple(as_vector(value, f"warm_start {name}", size)
                 for name, value, size in zip("xys", warm_start, (n, m, m)))


def solve_cone_program(
    A: sp.csc_matrix,
    b: np.ndarray,
    c: np.ndarray,
    cones: ConeSpec,
    P: Optional[sp.csc_matrix] = None,
    solve_method: str = "SCS",
    warm_start: Optional[tuple] = None,
    verbose: bool = False,
    raise_on_error: bool = True,
    **solver_kwargs: Any,
) -> SolverResult:
    """Solve ``min ½x'Px + c'x  s.t.  Ax + s = b, s in K`` and its dual.

    Parameters
    ----------
    A : scipy.sparse.csc_matrix
        Constraint matrix (m, n), float64, rows in the order of ``cones``.
    b : numpy.ndarray
        Right-hand side (m,).
    c : numpy.ndarray
        Linear objective (n,).
    cones : ConeSpec
        The cone K (validated).
    P : scipy.sparse.csc_matrix, optional
        Symmetric quadratic objective (n, n), full or upper-triangle storage: only its
        upper triangle is read.
    solve_method : str
        ``"SCS"``, ``"Clarabel"``, ``"ECOS"``, ``"IPM"`` (the dense interior-point method
        for small problems) or ``"auto"`` (see :func:`resolve_solve_method`),
        case-insensitive.
    warm_start : tuple of numpy.ndarray, optional
        ``(x, y, s)`` to start from; used by SCS and IPM, ignored by Clarabel and ECOS,
        which have no warm start.
    verbose : bool
        The solver's verbosity flag.
    raise_on_error : bool
        Raise :class:`SolverError` when the solver returns no solution (infeasible,
        unbounded, failed, or their inaccurate variants). Otherwise return the result
        with that status.
    **solver_kwargs
        Solver settings: SCS settings (``eps`` sets ``eps_abs`` and ``eps_rel``),
        ``clarabel.DefaultSettings`` attributes, or ``ecos.solve`` keywords.

    Returns
    -------
    SolverResult
        ``x``, ``y``, ``s`` in our layout, the canonical ``status`` and ``info``.
        The inputs are never modified.

    Raises
    ------
    ValueError
        On an unknown or uninstalled solver, a cone or a quadratic objective the solver
        cannot take, an unknown Clarabel setting, or a malformed ``warm_start``.
    SolverError
        As described under ``raise_on_error``.

    Warns
    -----
    InaccurateSolutionWarning
        When the solution is only ``optimal_inaccurate``.
    """
    solve_method = resolve_solve_method(solve_method, cones, A.shape, solver_kwargs)
    module = solver_module(solve_method)
    if warm_start is not None:
        warm_start = check_warm_start(warm_start, A.shape[1], A.shape[0])
    return module.solve(
        A,
        b,
        c,
        cones,
        P=P,
        warm_start=warm_start,
        verbose=verbose,
        raise_on_error=raise_on_error,
        **solver_kwargs,
    )


class BatchSolver:
    """One forward solver, with its settings, for every problem of a same-structure batch.

    Nothing is checked or set up until the first :meth:`solve` (so that errors are
    raised, as for single solves, while solving a problem). It pickles without its
    prepared state, which each unpickled copy (one per process task) rebuilds on first
    use; threads sharing one solver may each prepare it once on their first calls at the
    same time (harmless: the prepared states are equal).

    Parameters
    ----------
    solve_method : str
        ``"SCS"``, ``"Clarabel"``, ``"ECOS"`` or ``"IPM"``, case-insensitive (a whole
        same-structure batch goes to :class:`~diffqcp_np.solvers.batched_ipm.BatchedIPM`
        instead, from the batch functions).
    cones : ConeSpec
        The batch's cones (validated).
    patterns : SharedPatterns
    **solver_kwargs
        ``verbose`` and the solver's settings, as for ``solve_cone_program``.
    """

    def __init__(self, solve_method: str, cones: ConeSpec, patterns: SharedPatterns,
                 **solver_kwargs: Any) -> None:
        self.solve_method = solve_method
        self.cones = cones
        self.patterns = patterns
        self.solver_kwargs = solver_kwargs
        self._prepared: Optional[PreparedSolve] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_prepared"] = None
        return state

    def _prepare(self) -> PreparedSolve:
        module = solver_module(self.solve_method)
        settings = dict(self.solver_kwargs)
        verbose = bool(settings.pop("verbose", False))
        prepare = getattr(module, "prepare", None)
        if prepare is None:
            return generic_prepare(module, self.cones, self.patterns, verbose, settings)
        return prepare(self.cones, self.patterns, verbose, **settings)

    def solve(self, A: np.ndarray, b: np.ndarray, c: np.ndarray, P: Optional[np.ndarray],
              warm_start: Optional[tuple] = None, raise_on_error: bool = False) -> SolverResult:
        """Solve one problem of the batch.

        Parameters
        ----------
        A : ndarray
            Values of ``A`` on the shared pattern.
        b, c : ndarray
            Validated float64 vectors.
        P : ndarray or None
            Values of the upper triangle of the symmetric ``P`` on its shared pattern.
        warm_start : tuple, optional
            ``(x, y, s)``, checked as ``solve_cone_program`` does.
        raise_on_error : bool, default False
            As for ``solve_cone_program``.

        Returns
        -------
        SolverResult
            What ``solve_cone_program`` returns for the same problem and settings.

        Raises
        ------
        ValueError
            As ``solve_cone_program`` does (unknown solver or setting, bad warm start).
        """
        if self._prepared is None:
            self._prepared = self._prepare()
        if warm_start is not None:
            m, n = self.patterns.shape
            warm_start = check_warm_start(warm_start, n, m)
        return self._prepared(A, b, c, P, warm_start, raise_on_error)
