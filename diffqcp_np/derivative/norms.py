"""A vector norm and iterative refinement for the solvers' hot loops."""

from __future__ import annotations

from typing import Callable

import numpy as np


def vector_norm(v: np.ndarray) -> float:
    """Euclidean norm without BLAS.

    ``np.linalg.norm`` calls a threaded ``ddot`` whose thread wake-up costs milliseconds
    on a busy machine: more than a triangular solve of a mid-sized system.
    """
    return float(np.sqrt(np.einsum("i,i->", v, v)))


def refine(approx: Callable[[np.ndarray], np.ndarray], matvec: Callable[[np.ndarray], np.ndarray],
           r: np.ndarray, max_steps: int, tol: float) -> tuple[np.ndarray, float]:
    """Iterative refinement of ``approx(r)`` against ``matvec``, and its relative residual.

    A step is kept only if it lowers the residual; refinement stops after ``max_steps``
    steps, below ``tol`` (relative to ``r``), or once a step gains less than half.
    """
    norm_r = max(vector_norm(r), np.finfo(float).tiny)
    z = approx(r)
    residual = r - matvec(z)
    norm_res = vector_norm(residual)
    for _ in range(max_steps):
        if not norm_res > tol * norm_r:  # also stops on NaN
            break
        candidate = z + approx(residual)
        new_residual = r - matvec(candidate)
        new_norm = vector_norm(new_residual)
        if not new_norm < norm_res:
            break
        z, residual, improved = candidate, new_residual, new_norm < 0.5 * norm_res
        norm_res = new_norm
        if not improved:
            break
    return z, float(norm_res / norm_r)
