"""diffcp's ``utils`` module: test-problem generators and helpers, with diffcp 1.1.9's names.

``least_squares_eq_scs_data``, ``scs_data_from_cvxpy_problem``, ``get_random_like``,
``regularize_P``, ``embed_problem`` and the LPGD helpers ``compute_perturbed_solution``
and ``compute_adjoint_perturbed_solution`` take the same arguments and return the same
values as diffcp's, so scripts written against ``diffcp.utils`` give the same numbers.
CVXPY is imported only inside the functions that need it.

Where diffcp's versions fail, these do not:

- ``get_random_like`` fills A's *stored* pattern, so a matrix with explicit zeros (which
  diffqcp_np never deletes) works; without explicit zeros the result is identical to
  diffcp's, random draws included.
- ``embed_problem`` folds a zero cone given under the alias ``f`` into ``z`` instead of
  returning both keys.
- ``least_squares_eq_scs_data`` raises :class:`ValueError` instead of failing an ``assert``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from scipy import sparse

from ._validation import as_real_array
from .derivative.lpgd import embed_problem, regularize_P

__all__ = [
    "compute_adjoint_perturbed_solution",
    "compute_perturbed_solution",
    "embed_problem",
    "get_random_like",
    "least_squares_eq_scs_data",
    "regularize_P",
    "scs_data_from_cvxpy_problem",
]

_NO_WARM_START_SOLVERS = ("ECOS", "CLARABEL")


def scs_data_from_cvxpy_problem(problem):
    """SCS-form data ``(A, b, c, cone_dict)`` of a CVXPY problem.

    Parameters
    ----------
    problem : cvxpy.Problem

    Returns
    -------
    A : scipy.sparse matrix (m, n)
    b : ndarray (m,)
    c : ndarray (n,)
    cone_dict : dict
        As CVXPY's ``dims_to_solver_dict`` writes it for SCS.
    """
    import cvxpy as cp
    from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

    data = problem.get_problem_data(cp.SCS)[0]
    cone_dims = dims_to_solver_dict(data["dims"])
    return data["A"], data["b"], data["c"], cone_dims


def least_squares_eq_scs_data(m: int, n: int, seed: int = 0):
    """SCS data of a random problem with a unique solution (diffcp's test problem).

    The problem is ``minimize ‖Ax − b‖₁ subject to x ≥ 0, sum(x) = 1`` with ``A`` of
    shape ``(m, n)``, compiled by CVXPY.

    Like diffcp's, this seeds NumPy's global random generator with ``seed`` (so a script's
    later ``np.random`` draws are the same as under diffcp).

    Returns
    -------
    A, b, c, cone_dict
        As :func:`scs_data_from_cvxpy_problem`.

    Raises
    ------
    ValueError
        If ``m < n`` or the random ``A`` does not have full column rank.
    """
    import cvxpy as cp

    np.random.seed(seed)
    if m < n:
        raise ValueError(f"least_squares_eq_scs_data needs m >= n (got m={m}, n={n})")
    x = cp.Variable(n)
    b = np.random.randn(m)
    A = np.random.randn(m, n)
    if np.linalg.matrix_rank(A) != n:
        raise ValueError("the random A does not have full column rank; try another seed")
    objective = cp.pnorm(A @ x - b, 1)
    constraints = [x >= 0, cp.sum(x) == 1.0]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    return scs_data_from_cvxpy_problem(problem)


def get_random_like(A, randomness: Callable[[int], np.ndarray]) -> sparse.csc_matrix:
    """A random sparse matrix with the sparsity pattern of ``A``.

    Parameters
    ----------
    A : scipy sparse matrix (or ndarray)
    randomness : callable
        ``randomness(k)`` returns ``k`` random values.

    Returns
    -------
    scipy.sparse.csc_matrix
        ``randomness(A.nnz)`` placed on A's stored entries, in the order of
        ``A.nonzero()`` (which is diffcp's order when A has no explicit zeros).

    Raises
    ------
    TypeError
        If ``A`` is not a matrix of real numbers, or ``randomness`` is not callable.
    ValueError
        If ``A`` is not 2-D, or ``randomness(A.nnz)`` does not give ``A.nnz`` values.
    """
    if not callable(randomness):
        raise TypeError(f"randomness must be a callable randomness(k), got "
                        f"{type(randomness).__name__}")
    if not sparse.issparse(A):
        dense = as_real_array(A, "A", "a matrix of real numbers")
        if dense.ndim != 2:
            raise ValueError(f"A must be a 2-D matrix, got shape {dense.shape}")
        A = sparse.csc_matrix(dense)
    if A.format not in ("csc", "csr", "coo", "bsr"):
        A = A.tocsc()
    # A's stored pattern, explicit zeros included, in the order of A.nonzero()
    marker = A.copy()
    marker.data = np.ones_like(marker.data, dtype=np.float64)
    rows, cols = marker.nonzero()
    values = as_real_array(randomness(A.nnz), "randomness(k)", "an array of real numbers")
    if values.shape != (A.nnz,):
        raise ValueError(f"randomness(k) must return k = {A.nnz} values, got shape "
                         f"{values.shape}")
    return sparse.csc_matrix((values, (rows, cols)), shape=A.shape)


def _default_solve_internal(solve_internal):
    if solve_internal is not None:
        return solve_internal
    from .cone_program import solve_internal as ours

    return ours


def _warm_start_allowed(solve_method: Optional[str]) -> bool:
    return str(solve_method).upper() not in _NO_WARM_START_SOLVERS


def compute_perturbed_solution(dA, db, dc, dP, tau, rho, A, b, c, P, cone_dict, x, y, s,
                               solver_kwargs: dict, solve_method: Optional[str],
                               solve_internal: Optional[Callable[..., dict]] = None):
    """Solution of the problem perturbed to ``θ + τ dθ``, with a proximal term ``ρ/2‖x − x*‖²``.

    diffcp's LPGD helper. ``solve_internal`` defaults to :func:`diffqcp_np.solve_internal`.

    Returns
    -------
    x_pert, y_pert, s_pert : ndarray
    """
    solve = _default_solve_internal(solve_internal)
    n = A.shape[1]
    A_pert = A + tau * dA
    b_pert = b + tau * db
    c_pert = c + tau * dc
    P_pert = P + tau * dP if dP is not None else P
    P_pert_reg = regularize_P(P_pert, rho=rho, size=n)
    c_pert_reg = c_pert - rho * x
    warm_start = (x, y, s) if _warm_start_allowed(solve_method) else None
    result = solve(A=A_pert, b=b_pert, c=c_pert_reg, P=P_pert_reg, cone_dict=cone_dict,
                   solve_method=solve_method, warm_start=warm_start, **solver_kwargs)
    return result["x"], result["y"], result["s"]


def compute_adjoint_perturbed_solution(dx, dy, ds, tau, rho, A, b, c, P, cone_dict, x, y, s,
                                       solver_kwargs: dict, solve_method: Optional[str],
                                       solve_internal: Optional[Callable[..., dict]] = None):
    """Lagrangian proximal point of LPGD (diffcp's helper, arXiv:2407.05920).

    Solves ``min ½x'Px + c'x + τ(dx'x + ds's) + ρ/2‖x − x*‖²`` subject to
    ``Ax + s = b − τ dy, s ∈ K`` (through :func:`embed_problem` when ``ds ≠ 0``).
    ``solve_internal`` defaults to :func:`diffqcp_np.solve_internal`.

    Returns
    -------
    x_pert, y_pert, s_pert : ndarray
    """
    solve = _default_solve_internal(solve_internal)
    m, n = A.shape
    warm = _warm_start_allowed(solve_method)
    if np.isclose(np.sum(np.abs(ds)), 0):
        b_pert = b - tau * dy
        P_reg = regularize_P(P, rho=rho, size=n)
        c_pert_reg = c + tau * dx - rho * x
        result = solve(A=A, b=b_pert, c=c_pert_reg, P=P_reg, cone_dict=cone_dict,
                       solve_method=solve_method, warm_start=(x, y, s) if warm else None,
                       **solver_kwargs)
        return result["x"], result["y"], result["s"]

    A_emb, b_emb, c_emb, P_emb, cone_dict_emb = embed_problem(A, b, c, P, cone_dict)
    b_emb_pert = b_emb - tau * np.hstack([dy, np.zeros(m)])
    c_emb_pert = c_emb + tau * np.hstack([dx, ds])
    P_emb_reg = regularize_P(P_emb, rho=rho, size=n + m)
    c_emb_pert_reg = c_emb_pert - rho * np.hstack([x, s])
    warm_start: Any = ((np.hstack([x, s]), np.hstack([y, y]), np.hstack([s, s]))
                       if warm else None)
    result = solve(A=A_emb, b=b_emb_pert, c=c_emb_pert_reg, P=P_emb_reg,
                   cone_dict=cone_dict_emb, solve_method=solve_method,
                   warm_start=warm_start, **solver_kwargs)
    return result["x"][:n], result["y"][:m], result["x"][n:n + m]
