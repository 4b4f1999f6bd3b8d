"""Tests for the 3-D power-cone projection and its Jacobian (``_power_numba``).

Oracles: CVXPY's ``PowCone3D`` solved by Clarabel at tight tolerances, the optimality
conditions that characterise a projection onto a closed convex cone (``p`` in ``K``,
``p - v`` in ``K*``, ``<p, p - v> = 0``), the Moreau decomposition, central finite
differences, and Euler's identity ``DPi(v) v = Pi(v)`` of a positively homogeneous map.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffqcp_np.cones._power_numba import jacobian_power, project_power


def proj(v, alpha: float) -> np.ndarray:
    return project_power(np.asarray(v, dtype=float), np.array([alpha]))


def jac(v, alpha: float) -> np.ndarray:
    return jacobian_power(np.asarray(v, dtype=float), np.array([alpha]))[0]


def clarabel_projection(v: np.ndarray, alpha: float, dual: bool = False) -> np.ndarray:
    """Projection onto ``K_alpha`` (or ``K_alpha*``) by CVXPY + Clarabel.

    The problem is solved for ``v / ||v||`` and scaled back (projections onto cones are
    positively homogeneous), which keeps Clarabel's absolute tolerances meaningful.
    """
    scale = np.linalg.norm(v)
    p = cp.Variable(3)
    if dual:  # (u, v, w) in K* iff (u / alpha, v / (1 - alpha), w) in K
        cone = cp.constraints.PowCone3D(p[0] / alpha, p[1] / (1 - alpha), p[2], alpha)
    else:
        cone = cp.constraints.PowCone3D(p[0], p[1], p[2], alpha)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(p - v / scale)), [cone])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
               tol_ktratio=1e-10)
    assert prob.status in ("optimal", "optimal_inaccurate")
    return p.value * scale


def in_primal(p: np.ndarray, alpha: float, tol: float) -> bool:
    """Whether ``p`` is within about ``tol`` of ``K_alpha`` (coordinates moved by ``tol``)."""
    x, y, z = p[0] + tol, p[1] + tol, max(abs(p[2]) - tol, 0.0)
    return x >= 0 and y >= 0 and z <= x**alpha * y ** (1 - alpha)


def in_dual(q: np.ndarray, alpha: float, tol: float) -> bool:
    """Whether ``q`` is within about ``tol`` of ``K_alpha*`` (coordinates moved by ``tol``)."""
    u, v, w = q[0] + tol, q[1] + tol, max(abs(q[2]) - tol, 0.0)
    return u >= 0 and v >= 0 and w <= (u / alpha) ** alpha * (v / (1 - alpha)) ** (1 - alpha)


def central_differences(v: np.ndarray, alpha: float, h: float) -> np.ndarray:
    cols = [(proj(v + h * e, alpha) - proj(v - h * e, alpha)) / (2 * h) for e in np.eye(3)]
    return np.column_stack(cols)


def random_alpha(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.05, 0.95))


def random_outside_point(rng: np.random.Generator, alpha: float, margin: float = 0.05):
    """A random point whose projection is on the boundary, at a distance of at least
    ``margin ||v||`` from ``K``, from its polar and from the plane ``z0 = 0``."""
    while True:
        v = rng.standard_normal(3) * 10.0 ** rng.uniform(-2, 2)
        p = proj(v, alpha)
        size = np.linalg.norm(v)
        if min(np.linalg.norm(p), np.linalg.norm(v - p), abs(v[2])) > margin * size:
            return v


# Awkward points: every sign pattern of x0, y0 with z0 zero, tiny, moderate and huge.
AWKWARD_ALPHAS = [1e-9, 1e-3, 0.1, 0.5 - 1e-9, 0.5, 0.5 + 1e-9, 0.9, 1 - 1e-3, 1 - 1e-9]
AWKWARD_COORDS = [-2.0, -1e-6, 0.0, 1e-6, 1.0]
AWKWARD_Z = [0.0, 1e-300, 1e-100, 1e-12, 1e-8, 1e-3, 1.0, 1e3]


def awkward_points() -> tuple[np.ndarray, np.ndarray]:
    pts, alphas = [], []
    for a, z, x, y, sz in itertools.product(
        AWKWARD_ALPHAS, AWKWARD_Z, AWKWARD_COORDS, AWKWARD_COORDS, (1.0, -1.0)
    ):
        pts.append((x, y, sz * z))
        alphas.append(a)
    return np.array(pts), np.array(alphas)


def test_empty():
    assert project_power(np.zeros(0), np.zeros(0)).shape == (0,)
    assert jacobian_power(np.zeros(0), np.zeros(0)).shape == (0, 3, 3)


# Clarabel may report "optimal_inaccurate" at these tolerances; it still agrees to ~1e-7.
CLARABEL_WARNING = pytest.mark.filterwarnings("ignore:Solution may be inaccurate")


@CLARABEL_WARNING
@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9, 0.2718, 0.6931])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_projection_matches_clarabel(alpha: float, scale: float):
    rng = np.random.default_rng(int(1e4 * alpha) + int(np.log10(scale)))
    for _ in range(3):
        v = rng.standard_normal(3) * scale
        p = proj(v, alpha)
        np.testing.assert_allclose(p, clarabel_projection(v, alpha), rtol=0,
                                   atol=1e-6 * np.linalg.norm(v))


@CLARABEL_WARNING
@pytest.mark.parametrize("alpha", [0.15, 0.5, 0.85])
def test_dual_projection_by_moreau_matches_clarabel(alpha: float):
    rng = np.random.default_rng(int(100 * alpha))
    for _ in range(3):
        w = rng.standard_normal(3)
        dual_proj = w + proj(-w, alpha)  # Moreau: Pi_{K*}(w) = w + Pi_K(-w)
        np.testing.assert_allclose(dual_proj, clarabel_projection(w, alpha, dual=True),
                                   rtol=0, atol=1e-6 * np.linalg.norm(w))


def test_multiple_cones_in_one_call():
    rng = np.random.default_rng(7)
    alphas = rng.uniform(0.05, 0.95, 50)
    v = rng.standard_normal(150)
    p = project_power(v, alphas)
    J = jacobian_power(v, alphas)
    for i, a in enumerate(alphas):
        np.testing.assert_array_equal(p[3 * i:3 * i + 3], proj(v[3 * i:3 * i + 3], a))
        np.testing.assert_array_equal(J[i], jac(v[3 * i:3 * i + 3], a))


def test_optimality_conditions_random_points():
    """p in K, p - v in K* (Moreau with the dual cone), <p, p - v> = 0, idempotence."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        a = random_alpha(rng)
        v = rng.standard_normal(3) * 10.0 ** rng.uniform(-3, 3)
        size = np.linalg.norm(v)
        p = proj(v, a)
        assert in_primal(p, a, 1e-12 * size)
        assert in_dual(p - v, a, 1e-12 * size)
        assert abs(p @ (p - v)) <= 1e-13 * size**2
        np.testing.assert_allclose(proj(p, a), p, rtol=0, atol=1e-13 * size)


def test_cases_inside_cone_polar_and_on_plane():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = random_alpha(rng)
        x, y = rng.uniform(0.1, 2.0, 2)
        inside = np.array([x, y, 0.9 * x**a * y ** (1 - a) * rng.choice([-1, 1])])
        np.testing.assert_array_equal(proj(inside, a), inside)
        np.testing.assert_array_equal(jac(inside, a), np.eye(3))
        # -(u, v, w) with (u, v, w) in the interior of K*
        polar = -np.array([x, y, 0.9 * (x / a) ** a * (y / (1 - a)) ** (1 - a)])
        np.testing.assert_array_equal(proj(polar, a), np.zeros(3))
        np.testing.assert_array_equal(jac(polar, a), np.zeros((3, 3)))
        plane = np.array([x, -y, 0.0])
        np.testing.assert_array_equal(proj(plane, a), [x, 0.0, 0.0])


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_jacobian_matches_finite_differences(alpha: float):
    rng = np.random.default_rng(int(1000 * alpha))
    for _ in range(40):
        v = random_outside_point(rng, alpha)
        h = 1e-6 * np.linalg.norm(v)
        np.testing.assert_allclose(jac(v, alpha), central_differences(v, alpha, h),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.3, 0.45, 0.5, 0.55, 0.7])
@pytest.mark.parametrize("z0", [1e-3, -1e-6])
@pytest.mark.parametrize("xy", [(1.0, -1.0), (-0.3, 2.0), (2.0, -1e-2), (-1.0, -0.2)])
def test_jacobian_finite_differences_small_z(alpha: float, z0: float, xy):
    """Near the plane z0 = 0 (with a step that does not cross it)."""
    v = np.array([xy[0], xy[1], z0])
    h = 1e-3 * abs(z0)
    np.testing.assert_allclose(jac(v, alpha), central_differences(v, alpha, h),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("xy", [(1.0, -1.0), (-0.3, 2.0), (3.0, -0.1)])
def test_jacobian_on_plane_z0_zero(alpha: float, xy):
    """At z0 = 0 the projection is differentiable; compare with central differences
    (z0 -> -z0 flips z, so the z-column is z(h) / h) and with tiny |z0|."""
    v = np.array([xy[0], xy[1], 0.0])
    J = jac(v, alpha)
    np.testing.assert_allclose(J, central_differences(v, alpha, 1e-7), rtol=0, atol=1e-5)
    for z0 in (1e-12, -1e-8):
        np.testing.assert_allclose(jac([xy[0], xy[1], z0], alpha), J, rtol=0, atol=1e-6)


def test_jacobian_on_plane_alpha_half_closed_form():
    # alpha = 1/2, x0 > 0 > y0: r = k rho / (1 + k) with k = x0 / (2 |y0|) as rho -> 0.
    np.testing.assert_allclose(jac([1.0, -1.0, 0.0], 0.5), np.diag([1.0, 0.0, 1 / 3]))
    np.testing.assert_allclose(jac([-0.5, 2.0, 0.0], 0.5), np.diag([0.0, 1.0, 2 / 3]))


def test_awkward_points_are_finite_symmetric_and_bounded():
    pts, alphas = awkward_points()
    p = project_power(pts.ravel(), alphas).reshape(-1, 3)
    J = jacobian_power(pts.ravel(), alphas)
    assert np.isfinite(p).all() and np.isfinite(J).all()
    np.testing.assert_array_equal(J, J.transpose(0, 2, 1))
    eig = np.linalg.eigvalsh(J)
    assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
    size = np.linalg.norm(pts, axis=1)
    # Euler's identity for the positively homogeneous projection.
    np.testing.assert_allclose(np.einsum("kij,kj->ki", J, pts), p, rtol=0,
                               atol=1e-8 * size.max())
    np.testing.assert_allclose(jacobian_power(np.zeros(3), np.array([0.5]))[0], np.eye(3))
    assert not project_power(np.zeros(3), np.array([0.5])).any()


@pytest.mark.parametrize("alpha", [1e-6, 0.2, 0.5, 0.8, 1 - 1e-6])
def test_boundary_points(alpha: float):
    rng = np.random.default_rng(5)
    for _ in range(20):
        x, y = rng.uniform(0.1, 3.0, 2)
        s = rng.choice([-1.0, 1.0])
        on_cone = np.array([x, y, s * x**alpha * y ** (1 - alpha)])
        on_polar = -np.array([x, y, s * (x / alpha) ** alpha * (y / (1 - alpha)) ** (1 - alpha)])
        for v, target in ((on_cone, on_cone), (on_polar, np.zeros(3))):
            np.testing.assert_allclose(proj(v, alpha), target, rtol=0,
                                       atol=1e-9 * np.linalg.norm(v))
            J = jac(v, alpha)
            assert np.isfinite(J).all()
            np.testing.assert_array_equal(J, J.T)
            eig = np.linalg.eigvalsh(J)
            assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
    for v in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0],
              [0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 1e-9], [0.0, -1.0, 1e-9]):
        assert np.isfinite(jac(v, alpha)).all() and np.isfinite(proj(v, alpha)).all()


coord = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(x=coord, y=coord, z=coord, alpha=st.floats(0.02, 0.98))
def test_hypothesis_projection_and_jacobian(x: float, y: float, z: float, alpha: float):
    v = np.array([x, y, z])
    size = np.abs(v).max() + 1e-300
    p = proj(v, alpha)
    J = jac(v, alpha)
    assert np.isfinite(p).all() and np.isfinite(J).all()
    assert in_primal(p, alpha, 1e-12 * size)
    assert in_dual(p - v, alpha, 1e-12 * size)
    assert abs((p / size) @ ((p - v) / size)) <= 1e-13
    np.testing.assert_array_equal(J, J.T)
    eig = np.linalg.eigvalsh(J)
    assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
    np.testing.assert_allclose(J @ v, p, rtol=0, atol=1e-9 * size)
