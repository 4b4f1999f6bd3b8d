"""A vector norm for the solvers' hot loops."""

from __future__ import annotations

import numpy as np


def vector_norm(v: np.ndarray) -> float:
    """Euclidean norm without BLAS.

    ``np.linalg.norm`` calls a threaded ``ddot`` whose thread wake-up costs milliseconds
    on a busy machine: more than a triangular solve of a mid-sized system.
    """
    return float(np.sqrt(np.einsum("i,i->", v, v)))
