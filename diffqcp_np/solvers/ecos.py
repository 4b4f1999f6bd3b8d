"""Forward solver: ECOS (interior point, linear objective only).

ECOS solves ``min c'x  s.t.  A_eq x = b_eq,  G x + s = h,  s in K`` with K a product
of the nonnegative orthant, second-order cones and exponential cones; it has no
quadratic objective, PSD cones or power cones. Our zero-cone rows become its equality
rows. Its exponential cone cl{(x, y, z): z > 0, z exp(x/z) <= y} is ours with the last
two coordinates swapped, and dual exponential cones are mapped onto it by
``(u, v, w) -> (-v, -u, e w)`` (then swapped); ``y`` and ``s`` are mapped back.

ECOS has no warm start: a ``warm_start`` is accepted and ignored.

``info`` holds ECOS's own dictionary (``exitFlag``, ``pcost``, ``dcost``, ``pres``,
``dres``, ``gap``, ``iter``, ``timing``, ``infostring``, ...), the SCS-style keys of
:func:`~diffqcp_np.solvers.base.scs_style_info` (``solve_time`` and ``setup_time`` in
milliseconds, ``solveTime`` and ``setupTime`` in seconds, as diffcp reports them), plus
``canonical_status``, ``solver`` and ``solver_status``.

Ctrl-C: ECOS catches SIGINT itself while it solves, and may then report the iterate it
stopped at as "close to optimal"; a solve during which SIGINT arrived raises
``KeyboardInterrupt`` instead (ECOS's own record of the signal is read after the solve).
ECOS swaps the SIGINT handler in and out around each solve without counting nested
uses: two solves that overlap on threads could leave ECOS's handler installed for good
(Ctrl-C then lost for the process). :class:`_SigintGuard` puts back the process's own
handler when the last of overlapping solves ends.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import ecos
import numpy as np
import scipy.sparse as sp

from diffqcp_np._cancel import check_stop, interrupted
from diffqcp_np.cones.spec import ConeSpec
from diffqcp_np.solvers.base import (
    EXP_DUAL_TO_EXP,
    EXP_DUAL_TO_EXP_INV,
    FAILED,
    INFEASIBLE,
    INFEASIBLE_INACCURATE,
    OPTIMAL,
    OPTIMAL_INACCURATE,
    UNBOUNDED,
    UNBOUNDED_INACCURATE,
    RowTransform,
    SolverResult,
    as_solution_vector,
    checked_settings,
    finish,
    rejected_settings,
    scs_style_info,
)

NAME = "ECOS"

#: ECOS ``exitFlag`` to canonical status; anything else (max iterations, numerics,
#: interrupted, fatal) is ``failed``.
STATUS = {
    0: OPTIMAL,
    10: OPTIMAL_INACCURATE,
    1: INFEASIBLE,
    11: INFEASIBLE_INACCURATE,
    2: UNBOUNDED,
    12: UNBOUNDED_INACCURATE,
}

#: ``exitFlag`` to the status word of diffcp 1.1.9's ``SolverError`` messages
#: (``"Solver ecos returned status Infeasible"``; a negative flag is
#: ``"Solver ecos errored."``).
_DIFFCP_STATUS_WORD = {1: "Infeasible", 2: "Unbounded", 11: "Infeasible Inaccurate",
                       12: "Unbounded Inaccurate"}


#: ``exitFlag`` of a solve stopped by SIGINT.
INTERRUPTED = -4


def _ctrlc_record() -> Callable[[], int]:
    """ECOS's ``check_ctrlc``: nonzero when SIGINT arrived during its last solve (the
    record lasts until the next solve starts); a function returning 0 where ECOS's C
    library does not expose it."""
    try:
        import _ecos  # the extension module that ecos.solve calls

        function = ctypes.CDLL(_ecos.__file__).check_ctrlc
    except (ImportError, OSError, AttributeError):
        return lambda: 0
    function.argtypes = []
    function.restype = ctypes.c_int
    return function


_interrupted = _ctrlc_record()


class _SigintGuard:
    """Keeps the process's SIGINT disposition across ECOS solves that overlap on threads.

    The disposition is saved (the C library's ``sigaction`` record, as raw bytes: its
    layout need not be known) when the first of overlapping solves starts, and put back
    when the last one ends. Where ``sigaction`` cannot be called, solves run one at a
    time instead, which keeps ECOS's own save and restore nested.
    """

    #: Bytes reserved for a ``struct sigaction`` (152 on Linux x86-64).
    RECORD_SIZE = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serial = threading.Lock()
        self._depth = 0
        self._saved = ctypes.create_string_buffer(self.RECORD_SIZE)
        try:
            self._sigaction = ctypes.CDLL(None).sigaction
        except (OSError, AttributeError, TypeError):  # no sigaction (Windows)
            self._sigaction = None
        else:
            self._sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
            self._sigaction.restype = ctypes.c_int

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self._sigaction is None:
            with self._serial:
                yield
            return
        with self._lock:
            if self._depth == 0 and self._sigaction(signal.SIGINT, None, self._saved):
                raise OSError(ctypes.get_errno(), "sigaction failed")
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._sigaction(signal.SIGINT, self._saved, None)


_sigint_guard = _SigintGuard()


def _diffcp_wording(flag: int) -> str:
    if flag < 0:
        return "Solver ecos errored."
    return f"Solver ecos returned status {_DIFFCP_STATUS_WORD.get(flag, flag)}"


#: Our exponential-cone coordinates (r, s, t) in ECOS's order (r, t, s).
_SWAP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
_EXP_DUAL = _SWAP @ EXP_DUAL_TO_EXP
_EXP_DUAL_INV = EXP_DUAL_TO_EXP_INV @ _SWAP


#: ECOS settings and their types (others are passed on: ECOS decides).
SETTINGS = {
    "feastol": float, "abstol": float, "reltol": float, "feastol_inacc": float,
    "abstol_inacc": float, "reltol_inacc": float, "max_iters": int, "nitref": int,
}


def _check_supported(cones: ConeSpec, P: Optional[sp.csc_matrix]) -> None:
    if P is not None:
        raise ValueError(
            "ECOS cannot take a quadratic objective (P); "
            'use solve_method="Clarabel" or solve_method="SCS"'
        )
    if cones.psd:
        raise ValueError(
            "ECOS does not support PSD cones ('s'); "
            'use solve_method="Clarabel" or solve_method="SCS"'
        )
    if cones.power:
        raise ValueError(
            "ECOS does not support power cones ('p'); "
            'use solve_method="Clarabel" or solve_method="SCS"'
        )


def _exp_rows(cones: ConeSpec) -> RowTransform:
    start = cones.offsets["ep"]
    blocks = [(start + 3 * i, _SWAP, _SWAP) for i in range(cones.exp)]
    start = cones.offsets["ed"]
    blocks += [(start + 3 * i, _EXP_DUAL, _EXP_DUAL_INV) for i in range(cones.exp_dual)]
    return RowTransform(cones.dim, blocks)


def _csc_copy(M: sp.spmatrix) -> sp.csc_matrix:
    out = sp.csc_matrix(M, dtype=np.float64, copy=True)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def solve(
    A: sp.csc_matrix,
    b: np.ndarray,
    c: np.ndarray,
    cones: ConeSpec,
    P: Optional[sp.csc_matrix] = None,
    warm_start: Optional[tuple] = None,
    verbose: bool = False,
    raise_on_error: bool = True,
    **kwargs: Any,
) -> SolverResult:
    """Solve the cone program with ECOS.

    Parameters
    ----------
    A, b, c, cones
        Problem data (see :func:`diffqcp_np.solvers.solve_cone_program`); not modified.
    P : None
        Must be None: ECOS has no quadratic objective.
    warm_start : tuple, optional
        Ignored: ECOS has no warm start.
    verbose : bool
        ECOS's ``verbose``.
    raise_on_error : bool
        Raise :class:`~diffqcp_np.solvers.base.SolverError` on a status without a solution.
    **kwargs
        Passed to ``ecos.solve`` (``abstol``, ``reltol``, ``feastol``, ``max_iters``, ...).

    Returns
    -------
    SolverResult

    Raises
    ------
    ValueError
        If ``P`` is given, or the cones include PSD or power cones.
    KeyboardInterrupt
        If SIGINT (Ctrl-C) arrived during the solve.
    """
    _check_supported(cones, P)
    m, n = A.shape
    z = cones.zero
    rows = _exp_rows(cones) if cones.exp or cones.exp_dual else None
    A_rows, b_rows = rows.to_solver(A, b) if rows else (A, np.asarray(b))
    A_rows = sp.csc_matrix(A_rows)

    G = h = A_eq = b_eq = None
    if m > z:
        G, h = _csc_copy(A_rows[z:]), np.array(b_rows[z:], dtype=np.float64)
    if z:
        A_eq, b_eq = _csc_copy(A_rows[:z]), np.array(b_rows[:z], dtype=np.float64)
    ecos_cones = {"l": cones.nonneg, "q": list(cones.soc), "e": cones.exp + cones.exp_dual}
    settings = checked_settings(NAME, kwargs, SETTINGS)
    with _sigint_guard():
        check_stop()  # the batch may have been stopped while this thread waited
        try:
            solution = ecos.solve(np.array(c, dtype=np.float64), G, h, ecos_cones, A_eq,
                                  b_eq, verbose=bool(verbose), **settings)
        except TypeError as err:  # the data are checked: an unknown or mistyped setting
            raise rejected_settings(NAME, settings, SETTINGS, err) from err
    if _interrupted() or solution["info"]["exitFlag"] == INTERRUPTED:
        raise interrupted("ECOS was interrupted (SIGINT)")

    x = as_solution_vector(solution.get("x"), n)
    y = np.concatenate(
        [as_solution_vector(solution.get("y"), z), as_solution_vector(solution.get("z"), m - z)]
    )
    s = np.concatenate([np.zeros(z), as_solution_vector(solution.get("s"), m - z)])
    if rows:
        y, s = rows.from_solver(y, s)

    native = dict(solution["info"])
    flag = native["exitFlag"]
    status = STATUS.get(flag, FAILED)
    timing = native.get("timing", {})
    info = {
        **native,
        **scs_style_info(
            status,
            native["iter"],
            native["pcost"],
            native["dcost"],
            timing.get("tsolve", np.nan),
            timing.get("tsetup", np.nan),
        ),
    }
    return finish(NAME, f"{flag} ({native['infostring']})", status, x, y, s, info, raise_on_error,
                  wording=_diffcp_wording(flag))
