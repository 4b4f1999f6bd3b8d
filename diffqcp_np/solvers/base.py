"""Result type, errors, status mapping, row changes and matrices shared by the solvers.

Every solver module maps its own status to one of the canonical statuses below and
returns a :class:`SolverResult` through :func:`finish`, which raises
:class:`SolverError` on anything that is not a solution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from numbers import Integral, Real
from typing import Any, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from .._sparse import column_indices
from .._warnings import warn_at_caller

OPTIMAL = "optimal"
OPTIMAL_INACCURATE = "optimal_inaccurate"
INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"
INFEASIBLE_INACCURATE = "infeasible_inaccurate"
UNBOUNDED_INACCURATE = "unbounded_inaccurate"
FAILED = "failed"

#: Canonical statuses and their SCS-style equivalents ``(info["status"], info["status_val"])``,
#: the strings CVXPY's DIFFCP interface maps and the integers SCS 3 reports.
SCS_STYLE_STATUS: dict[str, tuple[str, int]] = {
    OPTIMAL: ("Solved", 1),
    OPTIMAL_INACCURATE: ("Solved/Inaccurate", 2),
    INFEASIBLE: ("Infeasible", -2),
    UNBOUNDED: ("Unbounded", -1),
    INFEASIBLE_INACCURATE: ("Infeasible/Inaccurate", -7),
    UNBOUNDED_INACCURATE: ("Unbounded/Inaccurate", -6),
    FAILED: ("Failure", -4),
}

#: Canonical statuses that carry a (primal-dual) solution.
SOLUTION_STATUSES = frozenset({OPTIMAL, OPTIMAL_INACCURATE})


class SolverError(Exception):
    """The forward solver did not return a solution (infeasible, unbounded or failed)."""


class InaccurateSolutionWarning(UserWarning):
    """The forward solver returned a solution of reduced accuracy."""


@dataclass
class SolverResult:
    """Primal-dual point returned by a forward solver, in SCS row order and layout.

    Attributes
    ----------
    x, y, s : numpy.ndarray
        Primal variable, dual variable and slack. For statuses without a solution they
        are what the solver returned (e.g. a certificate), or NaN where it returned none.
    status : str
        Canonical status, one of :data:`SCS_STYLE_STATUS`'s keys.
    info : dict
        The solver's own information, plus SCS-style keys (see each solver module).
    """

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    status: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the result is a solution (``optimal`` or ``optimal_inaccurate``)."""
        return self.status in SOLUTION_STATUSES


def scs_style_info(
    status: str,
    iterations: int,
    pobj: float,
    dobj: float,
    solve_time_s: float,
    setup_time_s: float,
) -> dict[str, Any]:
    """SCS-style ``info`` entries for a solver that is not SCS.

    Times are given in seconds and reported both as SCS does (``solve_time``,
    ``setup_time`` in milliseconds) and as diffcp does for ECOS and Clarabel
    (``solveTime``, ``setupTime`` in seconds).
    """
    scs_status, status_val = SCS_STYLE_STATUS[status]
    return {
        "status": scs_status,
        "status_val": status_val,
        "iter": int(iterations),
        "pobj": float(pobj),
        "dobj": float(dobj),
        "solve_time": 1e3 * float(solve_time_s),
        "setup_time": 1e3 * float(setup_time_s),
        "solveTime": float(solve_time_s),
        "setupTime": float(setup_time_s),
    }


def as_solution_vector(value: Optional[Sequence[float]], size: int) -> np.ndarray:
    """A float64 copy of ``value``, or NaNs when the solver returned nothing usable."""
    if value is None:
        return np.full(size, np.nan)
    out = np.array(value, dtype=np.float64).ravel()
    if out.shape != (size,):
        return np.full(size, np.nan)
    return out


#: What a status without a solution means, for :class:`SolverError` messages.
_MEANING = {
    INFEASIBLE: "The problem is primal infeasible.",
    UNBOUNDED: "The problem is unbounded (dual infeasible).",
    INFEASIBLE_INACCURATE: "The problem is probably primal infeasible; the solver could not "
                           "confirm it to its tolerance.",
    UNBOUNDED_INACCURATE: "The problem is probably unbounded; the solver could not confirm it "
                          "to its tolerance.",
    FAILED: "The solver stopped without a solution: an iteration or time limit, or numerical "
            "difficulties.",
}


def failure_message(wording: str, status: str, native_status: Any = None,
                    iterations: Any = None) -> str:
    """The text of a :class:`SolverError`: diffcp's wording, then what the status means.

    Parameters
    ----------
    wording : str
        diffcp 1.1.9's message for the same solver and status, e.g.
        ``"Solver scs returned status infeasible"``, so that code matching diffcp's
        messages with regular expressions keeps working.
    status : str
        Canonical status without a solution.
    native_status : optional
        The solver's own status, named in the details unless ``wording`` contains it.
    iterations : int, optional
        Iterations the solver took.

    Returns
    -------
    str
        E.g. ``"Solver scs returned status infeasible. The problem is primal infeasible.
        Canonical status: 'infeasible'; iterations: 50."``
    """
    details = []
    if native_status is not None and str(native_status) not in wording:
        details.append(f"solver status: {native_status}")
    details.append(f"canonical status: {status!r}")
    if iterations is not None:
        details.append(f"iterations: {int(iterations)}")
    details_text = "; ".join(details)
    return (f"{wording.rstrip('.')}. {_MEANING[status]} "
            f"{details_text[0].upper()}{details_text[1:]}.")


def finish(
    solver: str,
    native_status: Any,
    status: str,
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    info: dict[str, Any],
    raise_on_error: bool,
    wording: str,
) -> SolverResult:
    """Build the result; raise or warn according to its status.

    Parameters
    ----------
    solver : str
        Solver name, for ``info["solver"]``.
    native_status
        The solver's own status, for ``info["solver_status"]``.
    status : str
        Canonical status.
    x, y, s : numpy.ndarray
        Point in SCS row order and layout.
    info : dict
        Information dictionary; ``canonical_status``, ``solver`` and ``solver_status``
        are added, and ``error_message`` (the :class:`SolverError` text) when the
        status has no solution.
    raise_on_error : bool
        Raise :class:`SolverError` when ``status`` is not a solution.
    wording : str
        diffcp's message for this solver and status (see :func:`failure_message`).

    Raises
    ------
    SolverError
        If ``raise_on_error`` and the status is not ``optimal`` or ``optimal_inaccurate``;
        its message starts with ``wording``.

    Warns
    -----
    InaccurateSolutionWarning
        If the status is ``optimal_inaccurate``.
    """
    info["canonical_status"] = status
    info["solver"] = solver
    info["solver_status"] = str(native_status)
    if status == OPTIMAL_INACCURATE:
        warn_at_caller(
            f"Solver {solver.lower()} returned an inaccurate solution (status {native_status!r})",
            InaccurateSolutionWarning,
        )
    elif status not in SOLUTION_STATUSES:
        info["error_message"] = failure_message(wording, status, native_status, info.get("iter"))
        if raise_on_error:
            raise SolverError(info["error_message"])
    return SolverResult(x=x, y=y, s=s, status=status, info=info)


#: The kinds :func:`checked_settings` knows, with what a value of each must be.
_SETTING_KINDS = {
    int: "an integer",
    float: "a real number",
    bool: "True or False",
    str: "a string or None",
}
#: Integer settings go to C ``int`` fields.
_C_INT_LIMIT = 2**31


def _setting_value(kind: type, value: Any) -> Any:
    """``value`` as a setting of ``kind`` (``int``, ``float``, ``bool``, ``str``, or
    ``object`` for any value), or raise TypeError/ValueError (without the setting's name:
    the caller adds it)."""
    is_bool = isinstance(value, (bool, np.bool_))
    if kind is object:  # anything: the solver checks it
        return value
    if kind is bool:
        if is_bool or (isinstance(value, Integral) and value in (0, 1)):
            return bool(value)
    elif kind is int:
        if isinstance(value, Integral) and not is_bool:
            if not -_C_INT_LIMIT <= value < _C_INT_LIMIT:
                raise ValueError(f"must be an integer below 2**31 in magnitude, got {value!r}")
            return int(value)
    elif kind is float:
        if isinstance(value, Real) and not is_bool:
            return float(value)
    elif value is None or isinstance(value, str):
        return value
    raise TypeError(f"must be {_SETTING_KINDS[kind]}, got {value!r}")


def checked_settings(solver: str, settings: dict[str, Any],
                     kinds: dict[str, type]) -> dict[str, Any]:
    """The settings of a solver with the type of each known one checked (booleans given as
    0 or 1 made ``bool``), before its C code reads them by argument position.

    Names not in ``kinds`` are passed on: the solver decides (see
    :func:`rejected_settings`).

    Raises
    ------
    TypeError, ValueError
        Naming the setting, for a value of the wrong type or out of range.
    """
    out = dict(settings)
    for key, value in settings.items():
        kind = kinds.get(key)
        if kind is not None:
            try:
                out[key] = _setting_value(kind, value)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{solver} setting {key} {err}") from None
    return out


def rejected_settings(solver: str, settings: dict[str, Any], kinds: dict[str, type],
                      err: TypeError) -> ValueError:
    """The error for settings a solver's constructor refused with a ``TypeError`` (an
    unknown keyword, or a type it checks itself), naming the settings it does not know."""
    unknown = sorted(set(settings) - set(kinds))
    named = f"unknown {solver} settings {unknown}" if unknown else f"invalid {solver} settings"
    return ValueError(f"{named} ({err}); known settings: {sorted(kinds)}")


class RowTransform:
    """Invertible block-diagonal change of the constraint rows.

    A solver whose cones differ from ours by a linear map ``T`` (a reordering of
    coordinates, a scaling) receives ``T A`` and ``T b``, so that its slack is
    ``s' = T s``. Its solution maps back by ``s = T^{-1} s'`` and ``y = T' y'``,
    which preserves ``Ax + s = b``, ``A'y = (TA)'y'``, ``b'y`` and ``s'y``.

    Parameters
    ----------
    m : int
        Number of rows.
    blocks : sequence of (start, forward, inverse)
        Square blocks (dense arrays or sparse matrices) placed on the diagonal at row
        ``start``; rows not covered by a block are left unchanged.
    """

    def __init__(self, m: int, blocks: Sequence[tuple[int, Any, Any]]) -> None:
        self._T = self._assemble(m, [(start, fwd) for start, fwd, _ in blocks])
        self._T_inv = self._assemble(m, [(start, inv) for start, _, inv in blocks])

    @staticmethod
    def _assemble(m: int, blocks: Sequence[tuple[int, Any]]) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        covered = np.zeros(m, dtype=bool)
        for start, block in blocks:
            coo = sp.coo_matrix(block)
            rows.append(coo.row + start)
            cols.append(coo.col + start)
            vals.append(coo.data)
            covered[start : start + coo.shape[0]] = True
        free = np.flatnonzero(~covered)
        rows.append(free)
        cols.append(free)
        vals.append(np.ones(free.size))
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
        )

    def to_solver(self, A: sp.csc_matrix, b: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
        """The rows the solver sees: new arrays ``(T A, T b)``."""
        return sp.csc_matrix(self._T @ A), self.vector_to_solver(b)

    def vector_to_solver(self, b: np.ndarray) -> np.ndarray:
        """``T b``."""
        return self._T @ b

    def gather(self, indices: np.ndarray, indptr: np.ndarray,
               shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`to_solver`'s ``T A`` for every ``A`` on one CSC pattern, as a gather.

        Every T here has one entry per row (a scaled permutation of the rows), so each
        entry of ``T A`` is one entry of ``A`` times one factor: ``(T A).data =
        factor * A.data[source]``, exactly the products SciPy forms (before it drops
        the entries that come out zero, which the caller drops too).

        Returns
        -------
        indices, indptr : ndarray
            The canonical CSC pattern of ``T A``.
        source : ndarray of int64
            Position in ``A.data`` of each entry's factor.
        factor : ndarray
            The entry of T it is multiplied by.

        Raises
        ------
        ValueError
            If some row of T has more than one entry.
        """
        T = self._T
        if np.any(np.diff(T.indptr) != 1):
            raise ValueError("the row transform is not a scaled permutation")
        position = sp.csc_matrix((np.arange(1.0, indices.size + 1), indices, indptr),
                                 shape=shape)
        selection = sp.csr_matrix((np.ones(T.shape[0]), T.indices, T.indptr), shape=T.shape)
        product = sp.csc_matrix(selection @ position)
        product.sort_indices()
        return (product.indices, product.indptr, product.data.astype(np.int64) - 1,
                T.data[product.indices])

    def from_solver(self, y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map the solver's ``(y', s')`` back to ``(T' y', T^{-1} s')``."""
        return self._T.T @ y, self._T_inv @ s


#: SCS's exponential cone K_exp = cl{(r, s, t): s > 0, s exp(r/s) <= t} contains
#: ``EXP_DUAL_TO_EXP @ u`` exactly when ``u = (u, v, w)`` lies in its dual cone
#: {u < 0, -u exp(v/u) <= e w} ∪ {u = 0, v >= 0, w >= 0}: the map is (u, v, w) -> (-v, -u, e w).
EXP_DUAL_TO_EXP = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, np.e]])
EXP_DUAL_TO_EXP_INV = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0 / np.e]])


def dual_power_to_power(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Scaling that maps the dual power cone onto the power cone, and its inverse.

    ``K_a* = {(u, v, w): (u/a)^a (v/(1-a))^(1-a) >= |w|, u, v >= 0}``, so
    ``(u, v, w) in K_a*`` exactly when ``(u/a, v/(1-a), w) in K_a``.

    Parameters
    ----------
    alpha : float
        The parameter ``a`` in (0, 1) of the primal cone.
    """
    scale = np.array([1.0 / alpha, 1.0 / (1.0 - alpha), 1.0])
    return np.diag(scale), np.diag(1.0 / scale)


def upper_triangle(P: sp.csc_matrix) -> sp.csc_matrix:
    """The upper triangle of a canonical CSC matrix, as the solvers want it.

    Returns ``P`` itself when it stores nothing below the diagonal (never modified by the
    solvers), and otherwise drops the lower entries by masking the index arrays, which
    avoids ``scipy.sparse.triu``'s COO round trip (it dominated small batched solves).
    """
    keep = P.indices <= column_indices(P.indptr)
    if keep.all():
        return P
    return sp.csc_matrix(_kept_entries(P.data, P.indices, P.indptr, keep), shape=P.shape)


def drop_zeros(data: np.ndarray, indices: np.ndarray,
               indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSC arrays without the explicit zeros (as ``eliminate_zeros`` leaves them)."""
    return _kept_entries(data, indices, indptr, data != 0.0)


def _kept_entries(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
                  keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSC arrays ``(data, indices, indptr)`` of the stored entries where ``keep``."""
    counts = np.bincount(column_indices(indptr)[keep], minlength=indptr.size - 1)
    new_indptr = np.concatenate(([0], np.cumsum(counts))).astype(indptr.dtype)
    return data[keep], indices[keep], new_indptr


class CSCFactory:
    """CSC matrices on one canonical pattern, built without the constructor's checks.

    The constructor validates the pattern of every matrix; here the
    instance state is copied from a template built by the constructor, with the given
    ``data``, ``indices`` and ``indptr``. If a matrix built this way disagrees with the
    constructor's (another SciPy), the constructor is used.
    """

    def __init__(self, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]):
        self.indices = np.asarray(indices)
        self.indptr = np.asarray(indptr)
        self.shape = shape
        template = sp.csc_matrix((np.zeros(self.indices.size), self.indices.copy(),
                                  self.indptr.copy()), shape=shape)
        template.has_canonical_format = True
        self._state = dict(template.__dict__)
        self.fast = {"data", "indices", "indptr"} <= self._state.keys()
        if self.fast:
            values = np.arange(1.0, self.indices.size + 1)
            probe = self._build_fast(values[None], self.indices[None], self.indptr[None])[0]
            want = sp.csc_matrix((values, self.indices, self.indptr), shape=shape)
            try:
                self.fast = bool(probe.shape == want.shape and probe.nnz == want.nnz
                                 and probe.has_canonical_format
                                 and (probe != want).nnz == 0)
            except Exception:  # noqa: BLE001 - any failure: use the constructor
                self.fast = False

    def _build_fast(self, data, indices, indptr) -> list[sp.csc_matrix]:
        new, cls, state = object.__new__, sp.csc_matrix, self._state
        out = []
        for d_row, i_row, p_row in zip(data, indices, indptr):
            mat = new(cls)
            d = state.copy()
            d["data"], d["indices"], d["indptr"] = d_row, i_row, p_row
            mat.__dict__ = d
            out.append(mat)
        return out

    def one(self, data: np.ndarray) -> sp.csc_matrix:
        """One matrix with values ``data``, sharing the factory's index arrays (for
        matrices that are never modified in place)."""
        return self._make((data,), (self.indices,), (self.indptr,))[0]

    def build(self, data: np.ndarray) -> list[sp.csc_matrix]:
        """One matrix per row of ``data`` (shape ``(count, nnz)``), each with its own
        (writable) rows of batch-wide ``data``, ``indices`` and ``indptr`` arrays."""
        count = data.shape[0]
        return self._make(data, np.tile(self.indices, (count, 1)),
                          np.tile(self.indptr, (count, 1)))

    def shared(self, data: np.ndarray) -> list[sp.csc_matrix]:
        """One matrix per row of ``data``, all sharing the factory's (read-only) index
        arrays: for internal copies that are never modified in place."""
        indices, indptr = self._read_only
        if not self.fast:
            return self._make(data, (indices,) * data.shape[0], (indptr,) * data.shape[0])
        new, cls = object.__new__, sp.csc_matrix
        state = dict(self._state, indices=indices, indptr=indptr)
        out = []
        for row in data:
            mat = new(cls)
            mat.__dict__ = d = state.copy()
            d["data"] = row
            out.append(mat)
        return out

    @cached_property
    def _read_only(self) -> tuple[np.ndarray, np.ndarray]:
        """Read-only views of the factory's index arrays."""
        views = self.indices.view(), self.indptr.view()
        for view in views:
            view.flags.writeable = False
        return views

    def _make(self, data, indices, indptr) -> list[sp.csc_matrix]:
        if self.fast:
            return self._build_fast(data, indices, indptr)
        return [sp.csc_matrix((d, i, p), shape=self.shape, copy=False)
                for d, i, p in zip(data, indices, indptr)]
