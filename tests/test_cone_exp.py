"""Tests of the exponential-cone projection and its Jacobian (``cones._exp_numba``).

Oracles, all independent of the code under test:

- membership formulas of ``K_exp``, its dual ``K_exp*`` and its polar ``-K_exp*``, with a
  tolerance applied as a shift along an interior direction;
- exact projections in the regions where they are known in closed form;
- a reference root-case projection: the nearest point on the family of rays
  ``s (rho, 1, e^rho)``, i.e. the best of all stationary points of
  ``g(rho) = <v, u(rho)> / |u(rho)|`` located on a grid and refined by Brent's method (its
  stationarity equation is Friberg's, derived here from the ray geometry; the search, the
  branch selection and the reconstruction of the point are independent of the code);
- CVXPY + Clarabel (an interior-point solver, accurate to about ``1e-6``);
- central finite differences of the projection for the Jacobian.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq

from diffqcp_np.cones._exp_numba import jacobian_exp, project_exp

RNG_SEED = 20240611
EPS = np.finfo(np.float64).eps
#: A direction inside both K and K*, used to apply tolerances as shifts.
K_INTERIOR = np.array([-1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- oracles


def in_exp(x: np.ndarray, atol=0.0) -> np.ndarray:
    """Rows of ``x`` in ``K_exp`` after a shift by ``atol`` along an interior direction.

    ``atol`` is a scalar or one value per row.
    """
    x = np.atleast_2d(x)
    r, s, t = (x + np.reshape(atol, (-1, 1)) * K_INTERIOR).T
    with np.errstate(all="ignore"):
        strict = (s > 0) & (s * np.exp(r / s) <= t)
    return strict | ((s == 0) & (r <= 0) & (t >= 0))


def in_exp_dual(y: np.ndarray, atol=0.0) -> np.ndarray:
    """Rows of ``y`` in ``K_exp* = {u < 0, -u e^(v/u) <= e w} ∪ {(0, v, w) : v, w >= 0}``."""
    y = np.atleast_2d(y)
    u, v, w = (y + np.reshape(atol, (-1, 1)) * K_INTERIOR).T
    with np.errstate(all="ignore"):
        strict = (u < 0) & (-u * np.exp(v / u) <= np.e * w)
    return strict | ((u == 0) & (v >= 0) & (w >= 0))


def in_polar(x: np.ndarray, atol=0.0) -> np.ndarray:
    """Rows of ``x`` in the polar cone ``-K_exp*``."""
    return in_exp_dual(-np.atleast_2d(x), atol)


def normalized(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` scaled to unit norm (zero rows kept), without overflow or underflow."""
    v = np.atleast_2d(v)
    amax = np.abs(v).max(axis=1, keepdims=True)
    v = v / np.where(amax > 0, amax, 1.0)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def project_dual(v: np.ndarray) -> np.ndarray:
    """Projection onto ``K_exp*`` by Moreau: ``Π_{K*}(v) = v + Π_K(-v)``."""
    return v + project_exp(-v)


def _unit_ray(rho: float) -> np.ndarray:
    """``u(rho) = (rho, 1, e^rho)`` normalised to unit length."""
    if rho > 1.0:
        u = np.array([rho * np.exp(-rho), np.exp(-rho), 1.0])
    else:
        u = np.array([rho, 1.0, np.exp(rho)])
    return u / np.linalg.norm(u)


def reference_ray_projection(v: np.ndarray, rho_max: float = 1e8) -> np.ndarray:
    """Nearest point to ``v`` on the rays ``s u(rho)``, ``u = (rho, 1, e^rho)``, ``s >= 0``.

    Maximises ``g(rho) = <v, u> / |u|`` over its stationary points in ``|rho| <= rho_max``.
    With ``E = e^rho``, ``|u|^3 g' = <v, u'> |u|^2 - <v, u> <u, u'>`` simplifies to
    ``v0 (1 + (1 - rho) E^2) - v1 (rho + E^2) + v2 E (rho^2 - rho + 1)``, evaluated below
    divided by ``max(1, E)^2``; its zeros are located by Brent's method between the sign
    changes on a grid.
    """

    def dg(rho):
        e = np.exp(-np.abs(rho))
        q = rho * rho - rho + 1.0
        pos = v[0] * (e * e + 1.0 - rho) - v[1] * (rho * e * e + 1.0) + v[2] * e * q
        neg = v[0] * (1.0 + (1.0 - rho) * e * e) - v[1] * (rho + e * e) + v[2] * e * q
        return np.where(rho >= 0, pos, neg)

    grid = np.sinh(np.linspace(-np.arcsinh(rho_max), np.arcsinh(rho_max), 20001))
    vals = dg(grid)
    best, best_rho = -np.inf, np.nan
    for i in np.nonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) <= 0)[0]:
        rho = brentq(lambda x: float(dg(x)), grid[i], grid[i + 1], xtol=1e-300, rtol=4 * EPS)
        g = v @ _unit_ray(rho)
        if g > best:
            best, best_rho = g, rho
    return max(best, 0.0) * _unit_ray(best_rho)


# ------------------------------------------------------------------- random points


def random_in_cone(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points in the interior of ``K_exp``."""
    s = np.exp(rng.uniform(-2, 2, n))
    r = s * rng.uniform(-3, 3, n)
    t = s * np.exp(r / s) * (1.0 + rng.uniform(0.01, 2, n))
    return np.column_stack([r, s, t])


def random_in_polar(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points in the interior of the polar cone."""
    r = np.exp(rng.uniform(-2, 2, n))
    s = r * rng.uniform(-3, 3, n)
    t = -r * np.exp(s / r - 1.0) * (1.0 + rng.uniform(0.01, 2, n))
    return np.column_stack([r, s, t])


def random_negative(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points with ``r < 0``, ``s < 0`` and ``|t|`` away from 0."""
    x = -np.exp(rng.uniform(-2, 2, (n, 3)))
    x[:, 2] *= rng.choice([-1.0, 1.0], n)
    return x


def random_root_case(rng: np.random.Generator, n: int, margin: float = 0.0) -> np.ndarray:
    """Points outside ``K``, its polar and ``{r <= 0, s <= 0}`` (by at least ``margin |v|``)."""
    out = []
    while sum(len(o) for o in out) < n:
        v = rng.standard_normal((4 * n, 3))
        nv = np.linalg.norm(v, axis=1)
        keep = ~in_exp(v, margin * nv) & ~in_polar(v, margin * nv)
        keep &= (v[:, 0] > margin * nv) | (v[:, 1] > margin * nv)
        out.append(v[keep])
    return np.concatenate(out)[:n]


def scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random magnitudes in ``[1e-3, 1e3]``, one per row."""
    return 10.0 ** rng.uniform(-3, 3, (n, 1))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# ------------------------------------------------------------------------ projection


def test_empty_input():
    v = np.zeros(0)
    assert project_exp(v).shape == (0,)
    assert jacobian_exp(v).shape == (0, 3, 3)


@pytest.mark.parametrize("func", [project_exp, jacobian_exp])
def test_rejects_bad_length(func):
    with pytest.raises(ValueError, match="multiple of 3"):
        func(np.zeros(4))


def test_does_not_modify_input(rng):
    v = rng.standard_normal(30)
    v_copy = v.copy()
    project_exp(v)
    jacobian_exp(v)
    np.testing.assert_array_equal(v, v_copy)


def test_projection_closed_form_regions(rng):
    inside = random_in_cone(rng, 50) * scales(rng, 50)
    np.testing.assert_array_equal(project_exp(inside.ravel()), inside.ravel())
    polar = random_in_polar(rng, 50) * scales(rng, 50)
    np.testing.assert_array_equal(project_exp(polar.ravel()), 0.0)
    neg = random_negative(rng, 50) * scales(rng, 50)
    expected = np.column_stack([neg[:, 0], np.zeros(50), np.maximum(neg[:, 2], 0)])
    np.testing.assert_array_equal(project_exp(neg.ravel()).reshape(-1, 3), expected)


def test_projection_matches_ray_reference(rng):
    v = random_root_case(rng, 60) * scales(rng, 60)
    p = project_exp(v.ravel()).reshape(-1, 3)
    for vi, pi in zip(v, p):
        ref = reference_ray_projection(vi)
        np.testing.assert_allclose(pi, ref, rtol=0, atol=1e-12 * np.linalg.norm(vi))


@pytest.fixture(scope="module")
def clarabel_projector():
    cp = pytest.importorskip("cvxpy")
    x = cp.Variable(3)
    v = cp.Parameter(3)
    constraints = [cp.constraints.ExpCone(x[0], x[1], x[2])]
    problem = cp.Problem(cp.Minimize(cp.norm(x - v)), constraints)

    def solve(point: np.ndarray) -> np.ndarray:
        # The projection is positively homogeneous: solve at unit norm, scale back.
        norm = np.linalg.norm(point)
        v.value = point / norm
        problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                      tol_feas=1e-12, tol_ktratio=1e-8, max_iter=200)
        assert problem.status in ("optimal", "optimal_inaccurate")
        return x.value * norm

    return solve


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
def test_projection_matches_clarabel(rng, clarabel_projector):
    points = [rng.standard_normal((8, 3)) * scale for scale in (1e-3, 1.0, 1e3)]
    points += [random_root_case(rng, 4), random_negative(rng, 2), random_in_cone(rng, 2),
               random_in_polar(rng, 2)]
    points.append(np.array([[1e-3, -1.0, 0.5], [2.0, -3.0, 0.0], [1.0, 0.0, 0.0],
                            [0.0, 1.0, 0.0], [0.0, -1.0, 1.0], [-1.0, 0.1, -1.0]]))
    for v in np.concatenate(points):
        # Clarabel's exponential-cone solutions are accurate to about 1e-6 relative.
        np.testing.assert_allclose(project_exp(v), clarabel_projector(v), rtol=0,
                                   atol=1e-5 * np.linalg.norm(v))


def check_moreau(v: np.ndarray, tol: float = 1e-12) -> None:
    """Projection in K, polar part in the polar cone, orthogonality, dual projection in K*.

    Tolerances are relative to ``|v|``, the scale of the rounding errors.
    """
    v = np.atleast_2d(v)
    p = project_exp(v.ravel()).reshape(-1, 3)
    polar = -project_dual(-v.ravel()).reshape(-1, 3)
    nv = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(p + polar, v, rtol=0, atol=4 * EPS * nv.max())
    assert in_exp(p, tol * nv).all()
    assert in_polar(polar, tol * nv).all()
    assert in_exp_dual(project_dual(v.ravel()).reshape(-1, 3), tol * nv).all()
    assert (np.abs(np.sum(p * polar, axis=1)) <= tol * nv**2).all()


def test_moreau_random(rng):
    v = rng.standard_normal((20000, 3)) * 10.0 ** rng.uniform(-3, 3, (20000, 1))
    check_moreau(v)


def test_idempotent(rng):
    v = rng.standard_normal((2000, 3)) * scales(rng, 2000)
    p = project_exp(v.ravel())
    np.testing.assert_allclose(project_exp(p), p, rtol=0, atol=1e-14 * np.abs(v).max())
    y = project_dual(v.ravel())
    np.testing.assert_allclose(project_dual(y), y, rtol=0, atol=1e-14 * np.abs(v).max())


def test_projection_is_positively_homogeneous(rng):
    v = rng.standard_normal((500, 3))
    p = project_exp(v.ravel())
    for scale in (2.0**-900, 2.0**-40, 1e-3, 1e3, 2.0**40, 2.0**900):
        np.testing.assert_allclose(project_exp(v.ravel() * scale) / scale, p, rtol=0, atol=1e-14)


# -------------------------------------------------------------------------- Jacobian


def finite_difference_jacobian(v: np.ndarray, rel_step: float = 1e-6) -> np.ndarray:
    """Central differences of ``project_exp`` at each row of ``v``, shape ``(k, 3, 3)``."""
    h = rel_step * np.linalg.norm(v, axis=1)
    jac = np.empty((len(v), 3, 3))
    for j in range(3):
        step = np.zeros_like(v)
        step[:, j] = h
        diff = project_exp((v + step).ravel()) - project_exp((v - step).ravel())
        jac[:, :, j] = diff.reshape(-1, 3) / (2 * h[:, None])
    return jac


def test_jacobian_closed_form_regions(rng):
    eye = np.broadcast_to(np.eye(3), (50, 3, 3))
    np.testing.assert_array_equal(jacobian_exp(random_in_cone(rng, 50).ravel()), eye)
    np.testing.assert_array_equal(jacobian_exp(random_in_polar(rng, 50).ravel()), 0.0)
    neg = random_negative(rng, 50)
    expected = np.zeros((50, 3, 3))
    expected[:, 0, 0] = 1.0
    expected[:, 2, 2] = neg[:, 2] >= 0
    np.testing.assert_array_equal(jacobian_exp(neg.ravel()), expected)


def test_jacobian_matches_finite_differences(rng):
    v = np.concatenate([random_root_case(rng, 3000, margin=1e-4), random_in_cone(rng, 200),
                        random_in_polar(rng, 200), random_negative(rng, 200)])
    v *= scales(rng, len(v))
    np.testing.assert_allclose(jacobian_exp(v.ravel()), finite_difference_jacobian(v),
                               rtol=0, atol=1e-6)


FACE_RATIOS = [0.3, 0.05, 1e-2, 1.0 / 740, 1.0 / 760, 1e-8, 1e-300]


@pytest.mark.parametrize("ratio", FACE_RATIOS)
def test_jacobian_near_face(ratio):
    """Near the face ``s = 0`` (``0 < r0 << -s0``) the Jacobian tends to diag(0, 0, 1)."""
    v = np.array([[ratio, -1.0, 0.5], [ratio, -2.0, 3.0]])
    jac = jacobian_exp(v.ravel())
    if ratio > 1e-3:  # finite differences must not cross the plane r = 0
        fd = finite_difference_jacobian(v, 1e-7)
        np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-6)
    if ratio < 1e-2:
        np.testing.assert_allclose(jac, np.broadcast_to(np.diag([0.0, 0.0, 1.0]), jac.shape),
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("ratio", FACE_RATIOS)
def test_jacobian_near_polar_face(ratio):
    """Near ``r = 0`` of the polar (``r0 < 0 < s0 << -r0``, ``t0 < 0``): tends to diag(1, 1, 0)."""
    v = np.array([[-1.0, ratio, -0.5], [-2.0, ratio, -3.0]])
    jac = jacobian_exp(v.ravel())
    if ratio > 1e-3:  # finite differences must not cross the plane s = 0
        fd = finite_difference_jacobian(v, 1e-7)
        np.testing.assert_allclose(jac, fd, rtol=0, atol=1e-6)
    if ratio < 1e-2:
        np.testing.assert_allclose(jac, np.broadcast_to(np.diag([1.0, 1.0, 0.0]), jac.shape),
                                   rtol=0, atol=1e-6)


AWKWARD_POINTS = np.array([
    [1e-3, -1.0, 0.5], [2.0, -3.0, 0.0], [1e-12, -1.0, 1.0], [1e-300, -1.0, 1.0],
    [5e-324, 0.0, 1.0], [1e-20, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, -1.0],
    [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0],
    [-1.0, 0.0, 0.0], [-1.0, 0.0, -1.0], [0.0, -1.0, 1.0], [0.0, 1.0, -1.0], [1.0, -1.0, 0.0],
    [1.0, 1.0, np.e], [0.0, 1.0, 1.0], [-1.0, 1.0, np.exp(-1.0)], [1.0, np.e, 0.0],
    [1.0, -1.0, -np.exp(-2.0)], [1.0, 1.0, -1.0], [-1.0, 1e-300, -1.0], [-1.0, 1e-3, -1.0],
    [1.0, 1e-300, 1.0], [1e-300, 1.0, -1.0], [3.0, 1e-17, 0.0], [-3.0, -1e-17, 0.0],
    [1e300, -1e300, 1e300], [1e-300, 1e-300, -1e-300], [1e308, 1e308, 1e308],
    [-1.7e308, 1e-308, -1.7e308], [1e-310, 1e-310, 1e-310], [700.0, 1.0, 0.0],
    [-700.0, 1.0, 0.0], [1.0, 700.0, -1.0], [1.0, -700.0, 1.0],
])


def test_awkward_points_finite_and_valid():
    v = AWKWARD_POINTS
    p = project_exp(v.ravel()).reshape(-1, 3)
    jac = jacobian_exp(v.ravel())
    assert np.isfinite(p).all()
    assert np.isfinite(jac).all()
    # Moreau: scaled to unit max-norm to keep the orthogonality test in range.
    check_moreau(normalized(v))
    np.testing.assert_array_equal(jac, jac.transpose(0, 2, 1))
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12


def test_face_jacobian_values():
    v = np.array([[1e-3, -1.0, 0.5], [1e-300, -1.0, 1.0], [1e-3, -1.0, -0.5], [0.0, -1.0, 1.0]])
    expected = np.zeros((4, 3, 3))
    expected[[0, 1, 3], 2, 2] = 1.0
    np.testing.assert_allclose(jacobian_exp(v.ravel()), expected, rtol=0, atol=1e-12)


def test_jacobian_symmetric_contraction(rng):
    v = rng.standard_normal((20000, 3)) * 10.0 ** rng.uniform(-3, 3, (20000, 1))
    jac = jacobian_exp(v.ravel())
    np.testing.assert_array_equal(jac, jac.transpose(0, 2, 1))
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12


# ---------------------------------------------------------------------- properties

component = st.builds(
    lambda m, e: m * 10.0**e,
    st.floats(-1.0, 1.0, allow_nan=False),
    st.integers(-30, 30),
)


@settings(max_examples=200, deadline=None)
@given(st.tuples(component, component, component))
def test_property_random_vectors(v):
    v = np.array(v, dtype=np.float64)
    p = project_exp(v)
    jac = jacobian_exp(v)[0]
    assert np.isfinite(p).all()
    assert np.isfinite(jac).all()
    check_moreau(normalized(v))
    np.testing.assert_array_equal(jac, jac.T)
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
