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
  from a dense eigendecomposition;
- :func:`dense_cone_jacobian` and :func:`sparse_cone_jacobian`: ``DΠ_{K*}(v)`` of a
  product of SCS cones, block by block (closed forms for the zero, nonnegative,
  second-order and PSD cones, a fourth-order difference of ``pi`` for the 3-d cones);
  also the oracles of ``benchmarks/suite_reference.py``.
"""

from __future__ import annotations

import diffcp.cones as dc
import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from diffqcp_np.cones import pi


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


def central_path_point(A, b, c, P, cone_dict: dict, mu: float, steps: int = 200):
    """The solution of the barrier-smoothed problem by a naive primal-dual
    interior-point method on the dense central-path equations

        Px + A'y + c = 0,   Ax + s = b,   y ∘ s = μ e   (y, s in the cones' interiors)

    for zero (``s = 0``, ``y`` free), nonnegative and second-order cones (``∘`` the
    Jordan product), following μ down from 1 to ``mu`` and ending with Newton steps at
    ``mu``. Returns ``x, y, s``.
    """
    A = np.asarray(A.toarray() if hasattr(A, "toarray") else A, dtype=float)
    m, n = A.shape
    P = np.zeros((n, n)) if P is None else np.asarray(
        P.toarray() if hasattr(P, "toarray") else P, dtype=float)
    z, nonneg = int(cone_dict.get("z", 0)), int(cone_dict.get("l", 0))
    socs = [int(q) for q in cone_dict.get("q", [])]
    assert z + nonneg + sum(socs) == m and set(cone_dict) <= {"z", "l", "q"}
    blocks = [(z + nonneg + sum(socs[:i]), q) for i, q in enumerate(socs)]

    def identity():
        e = np.zeros(m)
        e[z:z + nonneg] = 1.0
        for start, _ in blocks:
            e[start] = 1.0
        return e

    def jordan(y, s):
        out = np.zeros(m)
        out[z:z + nonneg] = y[z:z + nonneg] * s[z:z + nonneg]
        for start, q in blocks:
            u, w = y[start:start + q], s[start:start + q]
            out[start] = u @ w
            out[start + 1:start + q] = u[0] * w[1:] + w[0] * u[1:]
        return out

    def arrow(y):
        """``L(y)`` with ``L(y) s = y ∘ s`` (zero rows: 0)."""
        L = np.zeros((m, m))
        for i in range(z, z + nonneg):
            L[i, i] = y[i]
        for start, q in blocks:
            u = y[start:start + q]
            L[start, start:start + q] = u
            L[start + 1:start + q, start] = u[1:]
            L[start + 1:start + q, start + 1:start + q] = u[0] * np.eye(q - 1)
        return L

    def interior_step(v, dv):
        """Largest step in (0, 1] keeping ``v + t dv`` in the interior (99% of the way)."""
        t = 1.0
        for i in range(z, z + nonneg):
            if dv[i] < 0:
                t = min(t, -0.99 * v[i] / dv[i])
        for start, q in blocks:
            u, du = v[start:start + q], dv[start:start + q]
            for _ in range(60):  # halve until strictly inside
                w = u + t * du
                if w[0] > np.linalg.norm(w[1:]) * (1 + 1e-12) and w[0] > 0:
                    break
                t *= 0.5
        return t

    e = identity()
    x, y, s = np.zeros(n), e.copy(), e.copy()
    zero_rows = np.arange(z)
    schedule = list(np.geomspace(1.0, mu, 40)) if mu < 1 else [mu]
    for target in schedule + [mu] * steps:
        r1 = P @ x + A.T @ y + c
        r2 = A @ x + s - b
        r3 = jordan(y, s) - target * e
        r3[zero_rows] = s[zero_rows]
        J = np.zeros((n + 2 * m, n + 2 * m))
        J[:n, :n], J[:n, n:n + m] = P, A.T
        J[n:n + m, :n], J[n:n + m, n + m:] = A, np.eye(m)
        J[n + m:, n:n + m], J[n + m:, n + m:] = arrow(s), arrow(y)
        J[n + m + zero_rows, :] = 0.0
        J[n + m + zero_rows, n + m + zero_rows] = 1.0
        d = np.linalg.solve(J, -np.concatenate([r1, r2, r3]))
        dx, dy, ds = d[:n], d[n:n + m], d[n + m:]
        t = min(interior_step(y, dy), interior_step(s, ds))
        x, y, s = x + t * dx, y + t * dy, s + t * ds
    return x, y, s


# -- cone Jacobians ---------------------------------------------------------------------------
#: Step of the fourth-order difference of the 3-d cone projections.
CONE_STEP = 1e-4
#: SCS's order of the cones in a product.
_SCS_ORDER = ("z", "l", "q", "s", "ep", "ed", "p")


def soc_jacobian(v: np.ndarray) -> np.ndarray:
    """Dense Jacobian of the second-order cone projection (closed form)."""
    t, u = v[0], v[1:]
    norm = np.linalg.norm(u)
    d = v.size
    if norm <= t:
        return np.eye(d)
    if norm <= -t:
        return np.zeros((d, d))
    w = u / norm
    J = np.empty((d, d))
    J[0, 0], J[0, 1:], J[1:, 0] = 1.0, w, w
    J[1:, 1:] = (1 + t / norm) * np.eye(d - 1) - (t / norm) * np.outer(w, w)
    return J / 2


def three_d_jacobians(v: np.ndarray, cones: dict) -> np.ndarray:
    """3×3 Jacobian blocks of Π_{K*} for 3-d cones (``v`` their rows), by differences."""
    def project(z):
        return pi(z, cones, dual=True).reshape(-1, 3)

    h = CONE_STEP * np.maximum(1.0, np.abs(v))
    blocks = np.empty((v.size // 3, 3, 3))
    for j in range(3):
        e = np.zeros(v.size)
        e[j::3] = h[j::3]
        deriv = (8 * (project(v + e) - project(v - e))
                 - (project(v + 2 * e) - project(v - 2 * e))) / 12
        blocks[:, :, j] = deriv / h[j::3, None]
    return blocks


def cone_jacobian_blocks(v: np.ndarray, cone_dict: dict) -> list[np.ndarray]:
    """The diagonal blocks of ``DΠ_{K*}(v)`` for a product of SCS cones, dense; zero and
    nonnegative cones as one diagonal block each."""
    blocks: list[np.ndarray] = []
    start = 0
    for key in _SCS_ORDER:
        value = cone_dict.get(key)
        if not value:
            continue
        if key in ("z", "l"):
            seg = v[start:start + value]
            blocks.append(np.ones(value) if key == "z" else (seg > 0).astype(float))
            start += value
        elif key in ("q", "s"):
            for d in value:
                size = d if key == "q" else d * (d + 1) // 2
                seg = v[start:start + size]
                blocks.append(soc_jacobian(seg) if key == "q" else daleckii_krein(seg, d))
                start += size
        else:
            size = 3 * (value if key in ("ep", "ed") else len(value))
            blocks.extend(three_d_jacobians(v[start:start + size], {key: value}))
            start += size
    return blocks


def dense_cone_jacobian(v: np.ndarray, cone_dict: dict) -> np.ndarray:
    """Dense ``DΠ_{K*}(v)`` for a product of SCS cones."""
    return la.block_diag(*(np.diag(b) if b.ndim == 1 else b
                           for b in cone_jacobian_blocks(v, cone_dict)))


def sparse_cone_jacobian(v: np.ndarray, cone_dict: dict) -> sp.csc_matrix:
    """``DΠ_{K*}(v)`` as a SciPy sparse matrix (its blocks as :func:`dense_cone_jacobian`)."""
    return sp.block_diag([sp.diags(b) if b.ndim == 1 else sp.csc_matrix(b)
                          for b in cone_jacobian_blocks(v, cone_dict)], format="csc")
