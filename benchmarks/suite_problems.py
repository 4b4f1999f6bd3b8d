"""Problem families of the benchmark suite, built in conic (SCS) form.

Every builder is deterministic (seeded) and returns a :class:`Problem`. Problems with a
known solution are built from a primal-dual pair: draw ``v``, set ``y = Π_{K*}(v)`` and
``s = y − v`` (so ``s ∈ K``, ``y ∈ K*``, ``s ⟂ y``), draw ``x``, then ``b = Ax + s`` and
``c = −Px − A'y``; generic ``v`` gives strict complementarity and the sizes are chosen
so that the solution is unique. The exponential- and power-cone problems come from
CVXPY (``get_problem_data(cp.SCS)``).

:func:`specs` lists the problems of a family at full or quick sizes; a :class:`Spec`
builds its problem lazily, so that a worker process can rebuild it from its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from bench_lp_derivative import sparse_lp
from diffqcp_np.cones import pi, vec_symm


@dataclass
class Problem:
    """A cone program ``min ½x'Px + c'x  s.t.  Ax + s = b, s ∈ K`` in SCS form.

    Attributes
    ----------
    A : scipy.sparse.csc_matrix, shape (m, n)
        Without explicit zeros.
    b : ndarray, shape (m,)
    c : ndarray, shape (n,)
    cone_dict : dict
        SCS cone dictionary (only non-empty entries).
    P : scipy.sparse.csc_matrix or None
        Full symmetric quadratic term.
    note : str
        How the problem was formulated.
    solution : (x, y, s) or None
        The known solution, for problems built with one.
    """

    A: sp.csc_matrix
    b: np.ndarray
    c: np.ndarray
    cone_dict: dict
    P: sp.csc_matrix | None = None
    note: str = ""
    solution: tuple | None = None

    @property
    def m(self) -> int:
        """Number of constraint rows."""
        return self.A.shape[0]

    @property
    def n(self) -> int:
        """Number of variables."""
        return self.A.shape[1]

    @property
    def N(self) -> int:
        """Size ``n + m`` of the derivative system."""
        return self.n + self.m


@dataclass(frozen=True)
class Spec:
    """A named problem of a family, built on demand.

    Attributes
    ----------
    family : str
    label : str
        Unique within the family.
    build : callable
        ``build() -> Problem``.
    """

    family: str
    label: str
    build: Callable[[], Problem]

    @property
    def name(self) -> str:
        """``family/label``."""
        return f"{self.family}/{self.label}"


def _sparse_normal(rows: int, cols: int, per_row: float, rng: np.random.Generator
                   ) -> sp.csc_matrix:
    """A sparse matrix with about ``per_row`` standard normal entries per row."""
    density = min(1.0, per_row / cols)
    return sp.random(rows, cols, density=density, random_state=rng,
                     data_rvs=rng.standard_normal, format="csc")


def _clean(A: sp.spmatrix) -> sp.csc_matrix:
    A = sp.csc_matrix(A, dtype=float)
    A.eliminate_zeros()
    A.sort_indices()
    return A


def with_known_solution(A: sp.spmatrix, cone_dict: dict, v: np.ndarray,
                        rng: np.random.Generator, P: sp.csc_matrix | None = None,
                        note: str = "") -> Problem:
    """The problem with matrix ``A`` whose solution is ``x`` (random), ``y = Π_{K*}(v)``.

    Parameters
    ----------
    A : sparse (m, n)
    cone_dict : dict
    v : ndarray (m,)
        ``y − s`` at the solution.
    rng : numpy.random.Generator
        Draws ``x``.
    P : sparse (n, n), optional
    note : str

    Returns
    -------
    Problem
    """
    A = _clean(A)
    x = rng.standard_normal(A.shape[1])
    y = pi(v, cone_dict, dual=True)
    s = y - v
    c = -(A.T @ y) - (P @ x if P is not None else 0.0)
    return Problem(A, A @ x + s, c, cone_dict, P, note, (x, y, s))


def all_cones(seed: int = 0) -> Problem:
    """A tiny QP over every cone type (the JIT warm-up and first-call problem).

    ``P = I`` and a dense ``A`` with as many columns as rows: unique and nondegenerate.
    """
    rng = np.random.default_rng(seed)
    cones = {"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "ed": 1, "p": [0.3, -0.4]}
    m = 1 + 2 + 3 + 3 + 3 * 4
    A = sp.csc_matrix(rng.standard_normal((m, m)))
    return with_known_solution(A, cones, rng.standard_normal(m), rng,
                               sp.identity(m, format="csc"), note="every cone")


def least_squares_simplex(rows: int, cols: int, seed: int = 0) -> Problem:
    """``min ||Fx − g||²  s.t.  x ≥ 0, 1'x = 1`` as a QP with the dense ``P = 2F'F``.

    ``c = −2F'g`` (the constant ``g'g`` is dropped). ``F`` has full column rank, so the
    solution is unique.
    """
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((rows, cols))
    g = rng.standard_normal(rows)
    A = sp.vstack([np.ones((1, cols)), -sp.identity(cols)])  # 1'x = 1, x ≥ 0
    b = np.concatenate([[1.0], np.zeros(cols)])
    P = sp.csc_matrix(2 * F.T @ F)
    return Problem(_clean(A), b, -2 * F.T @ g, {"z": 1, "l": cols}, P,
                   note="QP, dense P = 2F'F")


def sparse_lp_problem(n: int, seed: int = 0) -> Problem:
    """Box-constrained sparse LP with ``n`` extra rows (``bench_lp_derivative.sparse_lp``)."""
    A, b, c, cones = sparse_lp(n=n, extra_rows=n, seed=seed)
    return Problem(_clean(A), b, c, cones, note="known unique solution, half the box active")


def socp_blocks(n: int, dims: list[int], seed: int = 0) -> Problem:
    """LP-form problem over second-order cones of dimensions ``dims``, sparse ``A``.

    Every block's ``v = (t, u)`` has ``|t| < ||u||``: ``y`` and ``s`` are both nonzero on
    the cone boundary. Unique for ``n ≤ Σ(d − 1)`` (generic ``A``).
    """
    rng = np.random.default_rng(seed)
    m = sum(dims)
    A = _sparse_normal(m, n, 10, rng) + sp.eye(m, n)
    v = np.empty(m)
    start = 0
    for d in dims:
        u = rng.standard_normal(d - 1)
        v[start] = rng.uniform(-0.5, 0.5) * np.linalg.norm(u)
        v[start + 1:start + d] = u
        start += d
    return with_known_solution(A, {"q": list(dims)}, v, rng, note="known unique solution")


def sdp_block(k: int, n: int, seed: int = 0) -> Problem:
    """LMI-form problem over one PSD block of side ``k``, half its eigenvalues active.

    With rank ``r = k/2``, uniqueness needs ``r(r+1)/2 ≤ n ≤ r(r+1)/2 + r(k−r)``.
    """
    rng = np.random.default_rng(seed)
    rows = k * (k + 1) // 2
    A = _sparse_normal(rows, n, 10, rng) + sp.eye(rows, n)
    Q = np.linalg.qr(rng.standard_normal((k, k)))[0]
    r = k // 2
    eig = np.concatenate([rng.uniform(0.5, 1.5, r), -rng.uniform(0.5, 1.5, k - r)])
    v = vec_symm((Q * eig) @ Q.T)
    return with_known_solution(A, {"s": [k]}, v, rng, note=f"known unique solution, rank {r}")


def sparse_qp(n: int, seed: int = 0) -> Problem:
    """Banded sparse QP: ``P = B'B + 0.1 I`` (``B`` upper bidiagonal-like, 3 bands),
    ``n/2`` general rows (5 bands) and box rows on every variable.

    Row ``i`` of the general rows has its first entry in column ``i``; box bounds are
    active only on the other half of the variables (never both bounds of one), and
    about a third of the general rows are active: the active rows are independent and
    ``P`` is positive definite, so the solution is unique and strictly complementary.
    The banded patterns keep the forward solver's fill-in small at ``n = 10^5``.
    """
    rng = np.random.default_rng(seed)
    half = n // 2
    B = sp.diags([rng.standard_normal(n - k) for k in range(3)], range(3))
    P = (B.T @ B + 0.1 * sp.identity(n)).tocsc()
    G = sp.diags([rng.standard_normal(half) for _ in range(5)], range(5), shape=(half, n))
    A = sp.vstack([G, sp.identity(n), -sp.identity(n)])  # Gx ≤ h, x ≤ u, −x ≤ −l
    v_general = rng.uniform(0.1, 1.0, half) * np.where(rng.random(half) < 1 / 3, 1, -1)
    v_box = -rng.uniform(0.1, 1.0, 2 * n)
    active = np.flatnonzero(rng.random(n - half) < 2 / 3) + half
    upper = rng.random(active.size) < 0.5
    v_box[active[upper]] *= -1
    v_box[n + active[~upper]] *= -1
    v = np.concatenate([v_general, v_box])
    return with_known_solution(A, {"l": A.shape[0]}, v, rng, P,
                               note="banded, known unique solution")


def power_projection(cones: int, seed: int = 0) -> Problem:
    """Projection of a random point onto a product of 3-d power cones (``α`` in [0.2, 0.8]).

    ``min ½||z − z0||²  s.t.  z ∈ K_α1 × ... ``: ``P = I``, ``A = −I``, ``b = 0``.
    """
    rng = np.random.default_rng(seed)
    n = 3 * cones
    alphas = [float(a) for a in rng.uniform(0.2, 0.8, cones)]
    z0 = rng.standard_normal(n)
    return Problem(_clean(-sp.identity(n)), np.zeros(n), -z0, {"p": alphas},
                   sp.identity(n, format="csc"), note="QP, P = I")


def _from_cvxpy(problem, note: str) -> Problem:
    """SCS-form data of a CVXPY problem without quadratic objective."""
    import cvxpy as cp
    from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

    data = problem.get_problem_data(cp.SCS)[0]
    cones = {k: v for k, v in dims_to_solver_dict(data["dims"]).items()
             if k in ("z", "l", "q", "s", "ep", "ed", "p") and v}
    P = data.get("P")
    if P is not None and P.nnz:
        raise ValueError("expected a problem without quadratic objective")
    return Problem(_clean(data["A"]), np.asarray(data["b"], dtype=float),
                   np.asarray(data["c"], dtype=float), cones, note=note)


def entropy_maximisation(n: int, rows: int, seed: int = 0) -> Problem:
    """``max Σ −x log x  s.t.  Fx = g, 1'x = 1`` (CVXPY), ``g = F x0`` for ``x0`` in the simplex."""
    import cvxpy as cp

    rng = np.random.default_rng(seed)
    F = rng.standard_normal((rows, n))
    g = F @ rng.dirichlet(np.ones(n))
    x = cp.Variable(n)
    problem = cp.Problem(cp.Maximize(cp.sum(cp.entr(x))), [F @ x == g, cp.sum(x) == 1])
    return _from_cvxpy(problem, "CVXPY, one exponential cone per entry")


def logistic_regression(samples: int, features: int, seed: int = 0) -> Problem:
    """Unregularised logistic regression on non-separable data (20% flipped labels), CVXPY."""
    import cvxpy as cp

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, features))
    labels = np.sign(X @ rng.standard_normal(features))
    labels[rng.random(samples) < 0.2] *= -1
    theta = cp.Variable(features)
    loss = cp.sum(cp.logistic(-cp.multiply(labels, X @ theta)))
    return _from_cvxpy(cp.Problem(cp.Minimize(loss)), "CVXPY, two exponential cones per sample")


def pnorm_regression(rows: int, cols: int, p: float = 3.0, seed: int = 0) -> Problem:
    """``min ||Fx − g||_p`` with one 3-d power cone per residual.

    Variables ``(x, u, t)``: ``|F_i x − g_i| ≤ u_i^(1/p) t^(1−1/p)`` (a power cone with
    ``α = 1/p`` on ``(u_i, t, F_i x − g_i)``) and ``Σ u_i = t`` give ``||Fx − g||_p ≤ t``.
    """
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((rows, cols))
    g = rng.standard_normal(rows)
    n = cols + rows + 1  # x, u, t
    sum_row = sp.hstack([sp.csr_matrix((1, cols)), np.ones((1, rows)), [[-1.0]]])
    cone_rows = []  # slack (u_i, t, F_i x − g_i) = b − A z
    for i in range(rows):
        block = sp.lil_matrix((3, n))
        block[0, cols + i] = -1.0
        block[1, n - 1] = -1.0
        block[2, :cols] = -F[i]
        cone_rows.append(block)
    A = sp.vstack([sum_row, *cone_rows])
    b = np.concatenate([[0.0], np.column_stack([np.zeros(rows), np.zeros(rows), -g]).ravel()])
    c = np.zeros(n)
    c[-1] = 1.0
    return Problem(_clean(A), b, c, {"z": 1, "p": [1 / p] * rows}, note=f"p = {p:g}")


def _lsq(quick: bool) -> list[Spec]:
    sizes = [(20, 10), (200, 100)] + ([] if quick else [(2000, 1000)])
    return [Spec("lsq_simplex", f"F {r}×{c}", lambda r=r, c=c: least_squares_simplex(r, c))
            for r, c in sizes]


def _lp(quick: bool) -> list[Spec]:
    n = 200 if quick else 1000
    return [Spec("sparse_lp", f"n = {n}, A {3 * n}×{n}", lambda: sparse_lp_problem(n))]


def _socp(quick: bool) -> list[Spec]:
    sizes = [(100, [50, 100, 200])] if quick else [(300, [100] * 10), (1000, [500, 1000, 2000])]
    return [Spec("socp", f"n = {n}, q = {_dims_label(dims)}",
                 lambda n=n, dims=dims: socp_blocks(n, dims)) for n, dims in sizes]


def _dims_label(dims: list[int]) -> str:
    """``10×100`` for equal dimensions, ``500, 1000, 2000`` otherwise."""
    if len(set(dims)) == 1:
        return f"{len(dims)}×{dims[0]}"
    return ", ".join(map(str, dims))


def _sdp(quick: bool) -> list[Spec]:
    sizes = [(10, 30)] if quick else [(30, 200), (60, 800)]
    return [Spec("sdp", f"k = {k}, n = {n}", lambda k=k, n=n: sdp_block(k, n))
            for k, n in sizes]


def _exp(quick: bool) -> list[Spec]:
    entropy = [(100, 10)] if quick else [(500, 50), (3000, 30)]
    logistic = [(100, 10)] if quick else [(500, 20)]
    out = [Spec("exp", f"entropy n = {n}, F {r}×{n}", lambda n=n, r=r: entropy_maximisation(n, r))
           for n, r in entropy]
    out += [Spec("exp", f"logistic {s}×{f}", lambda s=s, f=f: logistic_regression(s, f))
            for s, f in logistic]
    return out


def _power(quick: bool) -> list[Spec]:
    cones = [30] if quick else [1000]
    rows, cols = (40, 10) if quick else (1000, 50)
    out = [Spec("power", f"projection, {k} cones", lambda k=k: power_projection(k))
           for k in cones]
    out.append(Spec("power", f"3-norm regression {rows}×{cols}",
                     lambda: pnorm_regression(rows, cols)))
    return out


def _qp(quick: bool) -> list[Spec]:
    sizes = [10**3, 10**4] if quick else [10**3, 10**4, 10**5]
    return [Spec("qp", f"n = 10^{len(str(n)) - 1}", lambda n=n: sparse_qp(n)) for n in sizes]


#: Families of single problems, in report order.
FAMILIES: dict[str, Callable[[bool], list[Spec]]] = {
    "lsq_simplex": _lsq,
    "sparse_lp": _lp,
    "socp": _socp,
    "sdp": _sdp,
    "exp": _exp,
    "power": _power,
    "qp": _qp,
}


def specs(family: str, quick: bool) -> list[Spec]:
    """The problems of ``family`` at quick or full sizes."""
    return FAMILIES[family](quick)


def find_spec(name: str, quick: bool) -> Spec:
    """The spec called ``name`` (``family/label``)."""
    family = name.split("/", 1)[0]
    for spec in specs(family, quick):
        if spec.name == name:
            return spec
    raise KeyError(name)
