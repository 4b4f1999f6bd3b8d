"""Lagrangian Proximal Gradient Descent (LPGD) modes: derivatives by perturbed re-solves.

``lpgd`` (central), ``lpgd_right`` and ``lpgd_left`` follow diffcp's definitions
(Paulus et al., arXiv:2407.05920): the JVP is a finite difference of solutions of the
perturbed problem, the VJP a finite difference of the Lagrangian's gradient at the
solutions of a problem whose linear terms are perturbed by the cotangents. As
``tau → 0`` they approach the exact derivative. Unlike diffcp, ``dP`` is the gradient of
``½ x'Px`` on P's whole stored pattern (diffcp keeps only a wrong diagonal).

diffcp's LPGD helpers :func:`regularize_P` and :func:`embed_problem` live here too
(:mod:`diffqcp_np.utils` exports them under diffcp's names).
"""

from __future__ import annotations

from contextlib import contextmanager
from copy import deepcopy
from numbers import Real
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from .._validation import ProblemData, as_vector
from ..cones.spec import as_cone_spec
from ..solvers.base import SolverError
from .patterns import MatrixPattern, QuadraticTerm


def regularize_P(P, rho: float, size: int):
    """``P + rho I`` (``rho I`` when ``P`` is None); ``P`` unchanged when ``rho <= 0``."""
    if rho > 0:
        reg = rho * sp.eye(size, format="csc")
        return reg if P is None else P + reg
    return P


def embed_problem(A, b, c, P, cone_dict):
    """Embed the problem so that the slack can carry a cost (diffcp's LPGD helper).

    ::

        A_emb = [A, I; 0, -I],  b_emb = [b; 0],  c_emb = [c; 0],  P_emb = [P, 0; 0, 0]

    and ``m`` more zero-cone rows in front of ``cone_dict``.

    Returns
    -------
    A_emb, b_emb, c_emb, P_emb, cone_dict_emb
        ``P_emb`` is None when ``P`` is.
    """
    m = b.shape[0]
    fmt = A.format if sp.issparse(A) else "csc"
    A_emb = sp.bmat([
        [A, sp.eye(m, format=fmt)],
        [None, -sp.eye(m, format=fmt)],
    ]).tocsc()
    b_emb = np.hstack([b, np.zeros(m)])
    c_emb = np.hstack([c, np.zeros(m)])
    if P is not None:
        P_emb = sp.bmat([[P, None], [None, sp.csc_matrix((m, m))]]).tocsc()
    else:
        P_emb = None
    cone_dict_emb = deepcopy(cone_dict)
    zero = int(cone_dict_emb.pop("f", 0) or 0) + int(cone_dict_emb.get("z", 0) or 0)
    cone_dict_emb["z"] = zero + m
    return A_emb, b_emb, c_emb, P_emb, cone_dict_emb


LPGD_MODES = ("lpgd", "lpgd_right", "lpgd_left")

#: A forward solve: (A, b, c, cones, P, warm_start) -> (x, y, s).
ForwardSolve = Callable[..., tuple]


def _check_tau_rho(tau: float | None, rho: float) -> None:
    if not _real(tau) or not tau > 0:
        raise ValueError(f"LPGD modes need a number tau > 0, got tau={tau!r}")
    if not _real(rho) or not rho >= 0:
        raise ValueError(f"LPGD modes need a number rho >= 0, got rho={rho!r}")


def _real(value) -> bool:
    """Whether ``value`` is a real number (not a bool, a string or None)."""
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


@contextmanager
def _perturbed_solve(t: float) -> Iterator[None]:
    """Re-raise a failed re-solve at ``t`` as diffcp does: naming the side and the remedy."""
    try:
        yield
    except SolverError as err:
        side, other = ("right", "lpgd_left") if t > 0 else ("left", "lpgd_right")
        reason = str(err).rstrip(".")
        raise SolverError(f"Computation of {side}-perturbed problem failed: {reason}. Consider "
                          f"decreasing tau or switching to {other!r} mode.") from err


class LPGDDerivative:
    """LPGD derivative at a solution ``(x, y, s)``.

    Parameters
    ----------
    data : ProblemData
    x, y, s : ndarray
    mode : {"lpgd", "lpgd_right", "lpgd_left"}
    forward : callable
        ``forward(A, b, c, cones, P, warm_start)`` returning ``(x, y, s)`` of a perturbed
        problem (raises ``SolverError`` on failure). ``P`` is full symmetric or None.
    tau : float, optional
        Default perturbation strength (may also be given per call).
    rho : float, default 0
        Default proximal regularisation strength.
    quadratic : QuadraticTerm, optional
        The quadratic term of ``data.P``, if the caller has built it already.
    """

    def __init__(self, data: ProblemData, x, y, s, mode: str, forward: ForwardSolve,
                 tau: float | None = None, rho: float = 0.0, *,
                 quadratic: QuadraticTerm | None = None) -> None:
        if mode not in LPGD_MODES:
            raise ValueError(f"mode must be one of {LPGD_MODES}, got {mode!r}")
        self.mode = mode
        self.data = data
        self.x = as_vector(x, "x", data.n)
        self.y = as_vector(y, "y", data.m)
        self.s = as_vector(s, "s", data.m)
        self.forward = forward
        if tau is not None:  # a default given now is checked now; else at each call
            _check_tau_rho(tau, rho)
        self.tau, self.rho = tau, rho
        self.A_pattern = MatrixPattern(data.A, "A")
        self.quadratic = QuadraticTerm(data.P, data.n) if quadratic is None else quadratic

    def _sides(self, tau: float) -> list[tuple[float, bool]]:
        """(signed tau, is the base point) pairs of the finite difference."""
        return {
            "lpgd": [(tau, False), (-tau, False)],
            "lpgd_right": [(tau, False), (0.0, True)],
            "lpgd_left": [(0.0, True), (-tau, False)],
        }[self.mode]

    def _divisor(self, tau: float) -> float:
        return 2 * tau if self.mode == "lpgd" else tau

    def jvp(self, dA=None, db=None, dc=None, dP=None, tau: float | None = None,
            rho: float | None = None):
        """Finite-difference JVP: solve the problem with data ``θ ± τ dθ``."""
        tau = self.tau if tau is None else tau
        rho = self.rho if rho is None else rho
        _check_tau_rho(tau, rho)
        d = self.data
        dA = sp.csc_matrix(d.A.shape) if dA is None else self.A_pattern.perturbation(dA, "dA")
        db = np.zeros(d.m) if db is None else as_vector(db, "db", d.m)
        dc = np.zeros(d.n) if dc is None else as_vector(dc, "dc", d.n)
        dP_full = None if dP is None else self.quadratic.expand(dP)
        P_full = self.quadratic.full

        sols = []
        for t, is_base in self._sides(tau):
            if is_base:
                sols.append((self.x, self.y, self.s))
                continue
            P_t = P_full if dP_full is None else (P_full + t * dP_full).tocsc()
            with _perturbed_solve(t):
                sols.append(self.forward(
                    (d.A + t * dA).tocsc(), d.b + t * db, d.c + t * dc - rho * self.x, d.cones,
                    regularize_P(P_t, rho, d.n), (self.x, self.y, self.s),
                ))
        (x1, y1, s1), (x0, y0, s0) = sols
        div = self._divisor(tau)
        return (x1 - x0) / div, (y1 - y0) / div, (s1 - s0) / div

    def _adjoint_solve(self, gx, gy, gs, t, rho):
        """Solve the problem whose linear terms are tilted by ``t`` times the cotangents."""
        d = self.data
        P_full = self.quadratic.full
        warm = (self.x, self.y, self.s)
        if not np.any(gs):
            x, y, _ = self.forward(
                d.A, d.b - t * gy, d.c + t * gx - rho * self.x, d.cones,
                regularize_P(P_full, rho, d.n), warm,
            )
            return x, y
        # Cost on s: add variables x' = s with rows [A, I; 0, -I] and zero cone first.
        m, n = d.m, d.n
        A_emb, b_emb, c_emb, P_emb, cones_emb = embed_problem(
            d.A, d.b - t * gy, d.c + t * gx, P_full, d.cones.to_dict())
        c_emb[n:] = t * gs
        c_emb -= rho * np.concatenate([self.x, self.s])
        x_emb, y_emb, _ = self.forward(
            A_emb, b_emb, c_emb, as_cone_spec(cones_emb), regularize_P(P_emb, rho, n + m), None
        )
        # The first m rows are the original constraints, now equalities: their
        # multipliers are the original problem's y.
        return x_emb[:n], y_emb[:m]

    def vjp(self, dx=None, dy=None, ds=None, return_dP: bool = False,
            tau: float | None = None, rho: float | None = None):
        """LPGD VJP: finite difference of the Lagrangian's gradients ``(y x', −y, x, ½xx')``."""
        tau = self.tau if tau is None else tau
        rho = self.rho if rho is None else rho
        _check_tau_rho(tau, rho)
        d = self.data
        gx = np.zeros(d.n) if dx is None else as_vector(dx, "dx", d.n)
        gy = np.zeros(d.m) if dy is None else as_vector(dy, "dy", d.m)
        gs = np.zeros(d.m) if ds is None else as_vector(ds, "ds", d.m)
        sols = []
        for t, is_base in self._sides(tau):
            if is_base:
                sols.append((self.x, self.y))
                continue
            with _perturbed_solve(t):
                sols.append(self._adjoint_solve(gx, gy, gs, t, rho))
        (x1, y1), (x0, y0) = sols
        div = self._divisor(tau)
        rows, cols = self.A_pattern.rows, self.A_pattern.cols
        dA = self.A_pattern.with_values((y1[rows] * x1[cols] - y0[rows] * x0[cols]) / div)
        db = -(y1 - y0) / div
        dc = (x1 - x0) / div
        if not return_dP:
            return dA, db, dc
        if self.quadratic.pattern is None:
            return dA, db, dc, sp.csc_matrix((d.n, d.n))
        values = (self.quadratic.lagrangian_gradient(x1)
                  - self.quadratic.lagrangian_gradient(x0)) / div
        return dA, db, dc, self.quadratic.pattern.with_values(values)
