"""Naive dense oracles that the tests compare the library with.

Each is written from the mathematics, in dense NumPy, without the library's own code
paths (only its cone projection ``pi`` where the formula takes it, and diffcp's PSD
vectorisation).

- :func:`active_set_reference`: the JVP of an LP/QP through its active set's KKT system;
- :func:`residual_map_reference`: the implicit-function derivative from central
  differences of the residual map (no K formula, no solver);
- :func:`naive_projection` and :func:`daleckii_krein`: the PSD projection by per-block
  eigen-clipping and its Jacobian by the Daleckii-Krein formula;
- :func:`dense_eigen_parts`: ``D``, ``E = D(I − D) + Π₀`` and ``Π₀`` of a cone Jacobian
  from a dense eigendecomposition.
"""

from __future__ import annotations

import diffcp.cones as dc
import numpy as np


def vdim(k: int) -> int:
    """Length of the vectorisation of a k×k symmetric matrix."""
    return k * (k + 1) // 2


def split(v: np.ndarray, sides: list[int]) -> list[np.ndarray]:
    """``v`` split into the vectorised blocks of PSD cones of the given sides."""
    return np.split(v, np.cumsum([vdim(k) for k in sides])[:-1])


def active_set_reference(prob, dA, db, dc, dP):
    """Naive dense JVP of an LP/QP with orthant and zero cones through its active set.

    The active constraints (zero cone and orthant rows with s = 0) hold with equality;
    differentiating the KKT system of the equality-constrained QP gives
    [[P, A_act'], [A_act, 0]] [dx; dy_act] = −[dP x + dA' y + dc; dA_act x − db_act].
    """
    A, P = prob.A.toarray(), (prob.P.toarray() if prob.P is not None else 0 * np.eye(prob.n))
    z = prob.cone_dict.get("z", 0)
    active = np.concatenate([np.ones(z, bool), prob.s[z:] < 1e-12])
    Aa = A[active]
    k = Aa.shape[0]
    K = np.block([[P, Aa.T], [Aa, np.zeros((k, k))]])
    dA, dP = dA.toarray(), (dP.toarray() if dP is not None else 0 * P)
    rhs = -np.concatenate([dP @ prob.x + dA.T @ prob.y + dc, dA[active] @ prob.x - db[active]])
    sol = np.linalg.solve(K, rhs)
    dx = sol[:prob.n]
    dy = np.zeros(prob.m)
    dy[active] = sol[prob.n:]
    ds = db - dA @ prob.x - A @ dx
    return dx, dy, ds


def residual_map_reference(prob, dA, db, dc, dP, eps=1e-6):
    """Dense implicit-function derivative built from central differences of the residual.

    F(x, v; θ) = [Px + A'Π*(v) + c; Ax + Π*(v) − v − b] with v = y − s. The partial
    Jacobians of F are taken by finite differences (no solver, no K formula), then
    [dx; dv] = −F_z⁻¹ F_θ dθ.
    """
    from diffqcp_np.cones import pi

    A = prob.A.toarray()
    P = prob.P.toarray() if prob.P is not None else np.zeros((prob.n, prob.n))

    def F(z, t):
        x, v = z[:prob.n], z[prob.n:]
        At = A + t * dA.toarray()
        Pt = P + t * (dP.toarray() if dP is not None else 0)
        yv = pi(v, prob.cone_dict, dual=True)
        return np.concatenate([Pt @ x + At.T @ yv + prob.c + t * dc,
                               At @ x + yv - v - prob.b - t * db])

    z0 = np.concatenate([prob.x, prob.y - prob.s])
    N = z0.size
    Fz = np.column_stack([(F(z0 + eps * e, 0) - F(z0 - eps * e, 0)) / (2 * eps)
                          for e in np.eye(N)])
    Ft = (F(z0, eps) - F(z0, -eps)) / (2 * eps)
    dz = -np.linalg.solve(Fz, Ft)
    dx, dv = dz[:prob.n], dz[prob.n:]
    dy = (pi(z0[prob.n:] + eps * dv, prob.cone_dict, dual=True)
          - pi(z0[prob.n:] - eps * dv, prob.cone_dict, dual=True)) / (2 * eps)
    return dx, dy, dy - dv


def naive_projection(v: np.ndarray, sides: list[int]) -> np.ndarray:
    """Per-block eigen-clipping with diffcp's vectorisation."""
    parts = []
    for x, k in zip(split(v, sides), sides):
        lam, Q = np.linalg.eigh(dc.unvec_symm(x, k))
        parts.append(dc.vec_symm((Q * np.maximum(lam, 0)) @ Q.T))
    return np.concatenate(parts) if parts else np.zeros(0)


def daleckii_krein(x: np.ndarray, k: int) -> np.ndarray:
    """Dense Jacobian of the projection at a point without zero eigenvalues.

    For ``f(t) = max(t, 0)``, ``Df(X)[H] = Q (F o (Q' H Q)) Q'`` with the divided
    differences ``F_ij = (f(l_i) - f(l_j)) / (l_i - l_j)`` (``f'(l_i)`` when equal),
    built column by column through diffcp's vectorisation.
    """
    lam, Q = np.linalg.eigh(dc.unvec_symm(x, k))
    f = np.maximum(lam, 0)
    diff = lam[:, None] - lam[None, :]
    equal = np.abs(diff) <= 1e-12 * max(1.0, np.abs(lam).max())
    F = np.where(equal, (lam[:, None] > 0).astype(float),
                 (f[:, None] - f[None, :]) / np.where(equal, 1.0, diff))
    cols = [dc.vec_symm(Q @ (F * (Q.T @ dc.unvec_symm(e, k) @ Q)) @ Q.T)
            for e in np.eye(vdim(k))]
    return np.column_stack(cols)


def dense_eigen_parts(jac) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``D``, ``E`` and ``Π₀`` of a :class:`~diffqcp_np.cones.ConeJacobian` from a dense
    eigendecomposition of its matrix."""
    D = jac.to_sparse().toarray()
    lam, V = np.linalg.eigh(D)
    null = lam < 1e-9
    Pi0 = (V[:, null]) @ V[:, null].T
    return D, D @ (np.eye(D.shape[0]) - D) + Pi0, Pi0
