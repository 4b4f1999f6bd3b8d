"""Random cone programs with a known solution, and finite-difference oracles.

A problem with known solution (DESIGN.md §8): draw ``v``, set ``y = Π_{K*}(v)`` and
``s = Π_{K*}(v) − v`` (so ``s ∈ K``, ``y ∈ K*``, ``s ⟂ y``), draw ``x``, then
``b = Ax + s`` and ``c = −Px − A'y``. Generic ``v`` gives strict complementarity, and a
positive definite ``P`` or a tall random ``A`` gives uniqueness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from diffqcp_np.cones import as_cone_spec, dpi_matrix, pi


@dataclass
class Problem:
    A: sp.csc_matrix
    b: np.ndarray
    c: np.ndarray
    cone_dict: dict
    P: sp.csc_matrix | None
    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def n(self) -> int:
        return self.A.shape[1]


def random_psd(n: int, rng: np.random.Generator, density: float = 0.3,
               shift: float = 0.1) -> sp.csc_matrix:
    """A sparse symmetric positive definite matrix."""
    F = sp.random(n, n, density=density, random_state=rng)
    return (F @ F.T + shift * sp.identity(n)).tocsc()


def _uniqueness_size(D: np.ndarray, quadratic: bool, n: int | None) -> int:
    """A number of variables for which a generic problem has a unique solution.

    With ``D = DΠ_{K*}(v)``: ``r1`` directions are fully active (eigenvalue 1) and ``rmid``
    lie on curved boundaries (eigenvalues strictly inside (0, 1)). A generic ``A`` makes
    the derivative system nonsingular when ``r1 <= n <= r1 + rmid`` (no P), or
    ``n >= r1`` (positive definite P).
    """
    eig = np.linalg.eigvalsh(D)
    r1 = int(np.sum(eig > 1 - 1e-9))
    rmid = int(np.sum((eig > 1e-9) & (eig < 1 - 1e-9)))
    if quadratic:
        return max(n or 1, r1, 1)
    target = r1 + rmid // 2 if n is None else min(max(n, r1), r1 + rmid)
    return max(target, 1)


def _well_conditioned(A, P, D: np.ndarray, limit: float = 1e3) -> bool:
    """Whether the derivative system K at this solution is comfortably nonsingular."""
    m, n = A.shape
    Ad = A.toarray()
    Pd = P.toarray() if P is not None else np.zeros((n, n))
    K = np.block([[Pd, Ad.T @ D], [-Ad, np.eye(m) - D]])
    return np.linalg.cond(K) < limit


def known_solution_problem(cone_dict: dict, n: int | None = None, seed: int = 0,
                           quadratic: bool = True, density: float = 0.4,
                           scale_v: float = 1.0) -> Problem:
    """A random problem with the given cones and a known, unique solution.

    ``n`` is a wish: it is adjusted so that the solution is unique (see
    :func:`_uniqueness_size`).
    """
    rng = np.random.default_rng(seed)
    spec = as_cone_spec(cone_dict)
    m = spec.dim
    v = scale_v * rng.standard_normal(m)
    D = dpi_matrix(v, spec, dual=True).toarray()
    n = _uniqueness_size(D, quadratic, n)
    P = random_psd(n, rng) if quadratic else None
    y = pi(v, spec, dual=True)
    for _ in range(50):
        A = sp.random(m, n, density=density, random_state=rng, format="csc",
                      data_rvs=rng.standard_normal)
        A = (A + sp.eye(m, n)).tocsc()
        if _well_conditioned(A, P, D):
            break
    else:
        raise RuntimeError("could not draw a problem with a unique solution")
    s = y - v
    x = rng.standard_normal(n)
    b = A @ x + s
    c = -(A.T @ y) - (P @ x if P is not None else 0.0)
    return Problem(A=A, b=b, c=c, cone_dict=cone_dict, P=P, x=x, y=y, s=s)


def random_like(mat: sp.csc_matrix, rng: np.random.Generator) -> sp.csc_matrix:
    """A random matrix on exactly ``mat``'s stored pattern."""
    return sp.csc_matrix((rng.standard_normal(mat.nnz), mat.indices, mat.indptr),
                         shape=mat.shape)


def psd_perturbed(P: sp.csc_matrix, rng: np.random.Generator,
                  scale: float = 0.01) -> sp.csc_matrix:
    """``P`` plus a random symmetric perturbation on its pattern and that perturbation's
    largest absolute row sum on the diagonal, so that a positive semidefinite ``P`` stays
    so (``P`` stores its whole diagonal: the pattern is kept)."""
    R = random_like(P, rng)
    G = scale * (R + R.T)
    shift = float(abs(G).sum(axis=1).max())
    return (P + G + shift * sp.identity(P.shape[0])).tocsc()


def random_perturbation(prob: Problem, rng: np.random.Generator):
    """Random ``(dA, db, dc, dP)`` on the stored patterns of A and P.

    ``dP`` follows P's storage: symmetric when P is stored in full, upper triangular when
    P is stored as its upper triangle; None without P.
    """
    dA = random_like(prob.A, rng)
    db = rng.standard_normal(prob.m)
    dc = rng.standard_normal(prob.n)
    dP = None
    if prob.P is not None:
        R = random_like(prob.P, rng)
        dP = R if abs(sp.tril(prob.P, -1)).sum() == 0 else ((R + R.T) * 0.5).tocsc()
    return dA, db, dc, dP


def random_perturbations(probs: list, seed: int = 0) -> list[tuple]:
    """:func:`random_perturbation` for each problem of a batch."""
    rng = np.random.default_rng(seed)
    return [random_perturbation(p, rng) for p in probs]


def inner(a, b) -> float:
    """Euclidean inner product of vectors or (sparse) matrices."""
    if sp.issparse(a):
        a = a.toarray()
    if sp.issparse(b):
        b = b.toarray()
    return float(np.sum(np.asarray(a) * np.asarray(b)))


def relative_error(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def assert_close(a, b, rtol: float, floor: float = 1e-6) -> None:
    """``‖a − b‖ ≤ rtol · max(‖b‖, floor)``: relative, with a floor for vectors that vanish."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    err = np.linalg.norm(a - b)
    assert err <= rtol * max(np.linalg.norm(b), floor), (err, np.linalg.norm(b))
