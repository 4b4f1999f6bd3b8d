"""Independent references for the derivative of a cone program's solution map.

``dense``
    The derivative system at a solution ``(x, y, s)``, built naively with dense NumPy::

        K = [  P    A'D  ]      D = DΠ_{K*}(y − s)
            [ −A    I−D  ]

    and solved with a dense LU (``scipy.linalg``). ``D`` is written out here: closed
    forms for the zero, nonnegative, second-order and PSD cones; for the 3-d
    exponential and power cones a fourth-order central difference of the public
    projection ``diffqcp_np.cones.pi`` (no use of the library's Jacobians).
``sparse LU``
    The same system with the same ``D`` blocks assembled by SciPy as a sparse matrix and
    solved with SciPy's SuperLU, for large problems whose cone blocks are small.
``fd``
    Central finite differences of the solution map along one random data direction,
    re-solving the perturbed problems with Clarabel at tight tolerance: gives ``D·dθ``
    directly and checks ``DT`` through the adjoint identity ``<DT(g), dθ> = <g, D·dθ>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import diffqcp_np
import _common  # noqa: F401 - puts tests/, the oracles' module, on the path
from naive import dense_cone_jacobian, sparse_cone_jacobian
from suite_problems import Problem

#: Clarabel settings of every forward solve in the suite.
TIGHT = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9, "max_iter": 500}
#: Clarabel settings of the finite-difference re-solves (where Clarabel stops short of
#: them it reports AlmostSolved, noted in the report).
FD_SOLVER = {**TIGHT, "tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11}
#: Relative size of the data step of the finite-difference reference.
FD_STEP = 1e-5


@dataclass
class Direction:
    """A data perturbation ``dθ = (dA, db, dc)`` and a cotangent ``g = (gx, gy, gs)``."""

    dA: sp.csc_matrix
    db: np.ndarray
    dc: np.ndarray
    gx: np.ndarray
    gy: np.ndarray
    gs: np.ndarray

    @property
    def g(self) -> np.ndarray:
        """The cotangent as one vector."""
        return np.concatenate([self.gx, self.gy, self.gs])


def random_direction(problem: Problem, seed: int = 1) -> Direction:
    """Standard normal ``dA`` (on A's pattern), ``db``, ``dc`` and cotangents."""
    rng = np.random.default_rng(seed)
    A = problem.A
    dA = sp.csc_matrix((rng.standard_normal(A.nnz), A.indices, A.indptr), shape=A.shape)
    m, n = problem.m, problem.n
    return Direction(dA, rng.standard_normal(m), rng.standard_normal(n),
                     rng.standard_normal(n), rng.standard_normal(m), rng.standard_normal(m))


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``||got − ref|| / ||ref||``."""
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), np.finfo(float).tiny))


def vjp_error(got: tuple, ref: tuple) -> float:
    """Relative error of ``(dA, db, dc)`` against ``ref`` (Frobenius norm for ``dA``)."""
    def norm(dA, db, dc):
        return np.sqrt(spla.norm(dA) ** 2 + db @ db + dc @ dc)

    diff = [sp.csc_matrix(got[0]) - ref[0], got[1] - ref[1], got[2] - ref[2]]
    return float(norm(*diff) / max(norm(*ref), np.finfo(float).tiny))


# -- the dense reference -----------------------------------------------------------------
class DenseReference:
    """LU solve of the derivative system at ``(x, y, s)`` along a direction: dense
    (``scipy.linalg``), or sparse (SciPy's SuperLU) with ``sparse=True``.

    Parameters
    ----------
    problem : Problem
    x, y, s : ndarray
        The solution at which to differentiate.
    d : Direction
    sparse : bool, default False
    """

    def __init__(self, problem: Problem, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                 d: Direction, sparse: bool = False):
        n, m = problem.n, problem.m
        self.kind = "sparse LU" if sparse else "dense"
        if sparse:
            D = sparse_cone_jacobian(y - s, problem.cone_dict)
            A = problem.A
            P = problem.P if problem.P is not None else sp.csc_matrix((n, n))
            lu = spla.splu(sp.bmat([[P, A.T @ D], [-A, sp.identity(m) - D]], format="csc"))

            def solve(r, transpose=False):
                return lu.solve(r, trans="T" if transpose else "N")
        else:
            D = dense_cone_jacobian(y - s, problem.cone_dict)
            A = problem.A.toarray()
            P = problem.P.toarray() if problem.P is not None else np.zeros((n, n))
            factors = la.lu_factor(np.block([[P, A.T @ D], [-A, np.eye(m) - D]]),
                                   check_finite=False)

            def solve(r, transpose=False):
                return la.lu_solve(factors, r, trans=1 if transpose else 0)
        # JVP: K [dx; dv] = −[dA'y + dc; −dA x + db], dy = D dv, ds = dy − dv
        z = solve(-np.concatenate([d.dA.T @ y + d.dc, -(d.dA @ x) + d.db]))
        dy = D @ z[n:]
        self.jvp = np.concatenate([z[:n], dy, dy - z[n:]])
        # VJP: K' [w1; w2] = −[gx; D'(gy + gs) − gs], dc = w1, db = w2, dA = y w1' − w2 x'
        w = solve(-np.concatenate([d.gx, D.T @ (d.gy + d.gs) - d.gs]), transpose=True)
        w1, w2 = w[:n], w[n:]
        rows, cols = problem.A.nonzero()
        dA = sp.csc_matrix((y[rows] * w1[cols] - w2[rows] * x[cols], (rows, cols)),
                           shape=problem.A.shape)
        self.vjp = (dA, w2, w1)

    def jvp_error(self, got: np.ndarray) -> float:
        """Relative error of ``(dx, dy, ds)`` (one vector)."""
        return relative_error(got, self.jvp)

    def vjp_error(self, dA: sp.spmatrix, db: np.ndarray, dc: np.ndarray) -> float:
        """Relative error of ``(dA, db, dc)``."""
        return vjp_error((dA, db, dc), self.vjp)


# -- the finite-difference reference -------------------------------------------------------
def _solve_tight(problem: Problem, A: sp.spmatrix, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    x, y, s = diffqcp_np.solve_only(A, b, c, problem.cone_dict, P=problem.P,
                                    solve_method="CLARABEL", **FD_SOLVER)
    return np.concatenate([x, y, s])


class FiniteDifferenceReference:
    """Central difference of the solution map along ``d``, re-solving with Clarabel.

    Parameters
    ----------
    problem : Problem
    d : Direction
    """

    kind = "FD"

    def __init__(self, problem: Problem, d: Direction):
        p = problem
        scale = np.linalg.norm(np.concatenate([p.A.data, p.b, p.c]))
        size = np.linalg.norm(np.concatenate([d.dA.data, d.db, d.dc]))
        h = FD_STEP * scale / size
        plus = _solve_tight(p, p.A + h * d.dA, p.b + h * d.db, p.c + h * d.dc)
        minus = _solve_tight(p, p.A - h * d.dA, p.b - h * d.db, p.c - h * d.dc)
        self.direction = d
        self.derivative = (plus - minus) / (2 * h)

    def jvp_error(self, got: np.ndarray) -> float:
        """Relative error of ``(dx, dy, ds)`` along the direction."""
        return relative_error(got, self.derivative)

    def vjp_error(self, dA: sp.spmatrix, db: np.ndarray, dc: np.ndarray) -> float:
        """Relative error of ``<DT(g), dθ>`` against ``<g, D·dθ>``."""
        d = self.direction
        got = float(sp.csc_matrix(dA).multiply(d.dA).sum() + db @ d.db + dc @ d.dc)
        ref = float(d.g @ self.derivative)
        return abs(got - ref) / abs(ref)
