"""The smoothed projection onto the dual cone, and its Jacobian (zero, orthant and SOC).

For ``μ > 0`` the smoothed projection ``Π_μ`` maps ``v`` to the ``y`` of the pair
``y, s`` in the interior of ``K*`` and ``K`` with ``y − s = v`` and ``y ∘ s = μ e``
(the Jordan product; ``e`` the identity of each cone): the central-path condition.
With it in place of ``Π``, the residual map's zero is the solution of the
barrier-smoothed problem

    minimize ½ x'Px + c'x − μ Σ_orthant log s_i − (μ/2) Σ_SOC log(s_0² − ‖s_1‖²)
    subject to Ax + s = b

and ``μ → 0`` gives back ``Π``. Per coordinate of the orthant and per eigenvalue ``λ``
of an SOC vector (spectral decomposition ``v = λ₁u₁ + λ₂u₂``) it is the
Chen-Harker-Kanzow-Smale function ``φ(λ) = (λ + √(λ² + 4μ)) / 2``, whose derivative
``φ'(λ) = (1 + λ/√(λ² + 4μ)) / 2`` lies strictly between 0 and 1: the Jacobian has no
kink and no null space, also where the exact ``DΠ`` jumps (degenerate rows, SOC
boundaries). The zero cone's dual is the whole space (``Π_μ(v) = v`` on its rows).

The SOC Jacobian of a spectral function (Fukushima, Luo and Tseng, 2002): with
``v = (t, z)``, ``ρ = ‖z‖``, ``w = z/ρ`` and ``λ₁,₂ = t ∓ ρ``,

    J = [[b, c w'], [c w, a I + (b − a) w w']],
    b = (φ'(λ₁) + φ'(λ₂))/2,  c = (φ'(λ₂) − φ'(λ₁))/2,  a = (φ(λ₂) − φ(λ₁))/(2ρ),

and ``J = φ'(t) I`` at ``ρ = 0``; ``a`` is evaluated as ``(φ(λ₁) + φ(λ₂))/(S₁ + S₂)``
(``S = √(λ² + 4μ)``, the same number), without the cancellation of the difference
quotient.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from .spec import ConeLike, ConeSpec, as_cone_spec

#: The cones that the smoothed projection covers.
SMOOTHED_CONES = ("zero", "nonnegative", "second-order")


def check_smoothable(cones: ConeLike) -> ConeSpec:
    """The cones as a :class:`ConeSpec`, if the smoothed projection covers them.

    Raises
    ------
    ValueError
        On PSD, exponential or power cones.
    """
    spec = as_cone_spec(cones)
    others = [name for name, present in (("PSD", spec.psd), ("exponential",
              spec.exp or spec.exp_dual), ("power", spec.power)) if present]
    if others:
        raise ValueError(
            f"smoothing covers {', '.join(SMOOTHED_CONES)} cones only; the problem has "
            f"{' and '.join(others)} cones")
    return spec


def check_smoothing(mu) -> float:
    """``mu`` as a positive finite float.

    Raises
    ------
    ValueError
        If it is not a positive finite number.
    """
    try:
        value = float(mu)
    except (TypeError, ValueError):
        raise ValueError(f"smoothing must be a positive number, got {mu!r}") from None
    if not (np.isfinite(value) and value > 0.0) or isinstance(mu, bool):
        raise ValueError(f"smoothing must be a positive number, got {mu!r}")
    return value


def _phi(lam: np.ndarray, mu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``φ(λ)``, ``φ'(λ)`` and ``S = √(λ² + 4μ)``.

    For ``λ < 0``, ``λ + S`` is written ``4μ / (S − λ)``, which keeps every digit.
    """
    root = np.sqrt(lam * lam + 4.0 * mu)
    negative = lam < 0
    plus = lam + root  # λ + S, accurate for λ >= 0
    plus[negative] = 4.0 * mu / (root[negative] - lam[negative])
    return 0.5 * plus, 0.5 * plus / root, root


class _SOCBlock:
    """One second-order cone's ``Π_μ(v)`` and the parameters of its Jacobian."""

    __slots__ = ("projection", "a", "b", "c", "w")

    def __init__(self, v: np.ndarray, mu: float) -> None:
        t, z = float(v[0]), v[1:]
        rho = float(np.linalg.norm(z))
        (f1, f2), (g1, g2), (S1, S2) = _phi(np.array([t - rho, t + rho]), mu)
        self.projection = np.empty_like(v)
        self.projection[0] = 0.5 * (f1 + f2)
        self.b, self.c = 0.5 * (g1 + g2), 0.5 * (g2 - g1)
        self.a = (f1 + f2) / (S1 + S2)
        if rho > 0.0:
            self.w = z / rho
            self.projection[1:] = self.a * z  # (φ(λ₂) − φ(λ₁))/2 · w = a ρ w
        else:
            self.w = np.zeros_like(z)
            self.projection[1:] = 0.0

    def dense(self) -> np.ndarray:
        d = self.w.size + 1
        J = np.empty((d, d))
        J[0, 0] = self.b
        J[0, 1:] = J[1:, 0] = self.c * self.w
        J[1:, 1:] = (self.b - self.a) * np.outer(self.w, self.w)
        J[1:, 1:].flat[::d] += self.a
        return J


def smoothed_projection(v: np.ndarray, cones: ConeLike, mu: float) -> np.ndarray:
    """``Π_μ(v)``: the smoothed projection onto the dual cone ``K*`` (see the module
    docstring)."""
    return SmoothedConeJacobian(v, cones, mu).projection


class SmoothedConeJacobian:
    """``DΠ_μ(v)`` of the smoothed projection onto ``K*``, and ``Π_μ(v)`` itself.

    Symmetric, block diagonal, eigenvalues strictly inside (0, 1] (1 on the zero cone's
    rows): it stands in for :class:`~diffqcp_np.cones.ConeJacobian` in the derivative's
    system, whose LU (or dense or iterative) solvers use only :meth:`matvec`,
    :meth:`to_sparse`, :meth:`to_dense` and :meth:`same_as`.

    Parameters
    ----------
    v : ndarray, shape (m,)
    cones : dict, list of (key, value) or ConeSpec
        Zero, nonnegative and second-order cones only.
    mu : float
        The smoothing, positive.
    """

    dual = True

    def __init__(self, v: np.ndarray, cones: ConeLike, mu: float) -> None:
        self.spec = spec = check_smoothable(cones)
        self.mu = check_smoothing(mu)
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (spec.dim,):
            raise ValueError(f"v has shape {v.shape}, expected ({spec.dim},)")
        self.shape = (spec.dim, spec.dim)
        sl = spec.slices()
        self.projection = np.empty_like(v)
        self.projection[sl["z"]] = v[sl["z"]]
        value, slope, _ = _phi(v[sl["l"]], self.mu)
        self.projection[sl["l"]] = value
        #: The diagonal of the zero-cone and orthant rows.
        self.diagonal_part = np.concatenate([np.ones(spec.zero), slope])
        self._soc_start = sl["q"].start
        self._blocks = []
        start = self._soc_start
        for size in spec.soc:
            block = _SOCBlock(v[start:start + size], self.mu)
            self.projection[start:start + size] = block.projection
            self._blocks.append(block)
            start += size
        self._matrix = self._assemble()

    def _assemble(self) -> sp.csc_matrix:
        k = self.diagonal_part.size
        parts = [sp.diags(self.diagonal_part, format="csc")] if k else []
        parts += [sp.csc_matrix(block.dense()) for block in self._blocks]
        if not parts:
            return sp.csc_matrix(self.shape)
        return sp.block_diag(parts, format="csc")

    def matvec(self, dx: np.ndarray) -> np.ndarray:
        """Apply the Jacobian to ``dx`` (shape (m,))."""
        return self._matrix @ np.asarray(dx, dtype=np.float64)

    __call__ = matvec

    def same_as(self, other) -> bool:
        """Whether ``other`` is the same matrix."""
        if not isinstance(other, SmoothedConeJacobian) or other.spec != self.spec:
            return False
        a, b = self._matrix, other._matrix
        return (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                and np.array_equal(a.data, b.data))

    def to_sparse(self) -> sp.csc_matrix:
        """The Jacobian as a sparse block-diagonal CSC matrix."""
        return self._matrix.copy()

    def to_dense(self) -> np.ndarray:
        """The Jacobian as a dense ``m × m`` array."""
        return self._matrix.toarray()

    def as_linear_operator(self) -> LinearOperator:
        """The Jacobian as a symmetric :class:`scipy.sparse.linalg.LinearOperator`."""
        return LinearOperator(self.shape, matvec=self.matvec, rmatvec=self.matvec, dtype=float)
