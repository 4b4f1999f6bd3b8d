"""Ordinary and awkward inputs for the kernel tests (each sample covers every region of
its kernel, exact boundaries and extreme scales)."""

from __future__ import annotations

import numpy as np
from test_cone_exp import AWKWARD_POINTS as EXP_AWKWARD
from test_cone_exp import random_in_cone, random_in_polar, random_negative, random_root_case
from test_cone_power import awkward_points as power_awkward

#: (grid, block) launch shapes; None is the package's default geometry.
GEOMETRIES = [None, (1, 1), (3, 7), (2, 64), (50, 32)]


def soc_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SOC points ``v`` and cone offsets: dimensions 1 to 40, interior, polar and
    boundary regions, points exactly on the cone's and the polar's boundary (exact norms
    3-4-5 and 5-12-13), zero tails, scales 1e+-100 and 1e+-200."""
    cones = []
    for _ in range(240):
        dim = int(rng.integers(1, 41))
        t, z = rng.standard_normal(), rng.standard_normal(dim - 1)
        kind = rng.integers(0, 7)
        if kind == 0:  # interior or polar, well inside
            t = np.sign(t) * (np.linalg.norm(z) + abs(t))
        elif kind == 1 and dim >= 3:  # exactly on the boundary of K or of its polar
            z[:] = 0.0
            z[:2] = (3.0, 4.0) if rng.integers(2) else (5.0, 12.0)
            t = np.linalg.norm(z) * rng.choice([1.0, -1.0])
            scale = 2.0 ** int(rng.integers(-60, 60))
            t, z = t * scale, z * scale
        elif kind == 2:
            z[:] = 0.0
        cone = np.concatenate(([t], z))
        if kind in (3, 4):
            cone = cone * 10.0 ** rng.choice([-200, -100, 100, 200])
        cones.append(cone)
    offsets = np.concatenate(([0], np.cumsum([c.size for c in cones]))).astype(np.int64)
    return np.concatenate(cones), offsets


def exp_sample(rng: np.random.Generator) -> np.ndarray:
    """Exponential-cone points ``(k, 3)``: every region (cone, polar, negative quadrant,
    root case, both faces), the face ``s = 0`` and tiny ``s``, extreme scales."""
    parts = [EXP_AWKWARD, random_in_cone(rng, 40), random_in_polar(rng, 40),
             random_negative(rng, 40), random_root_case(rng, 200)]
    face = np.column_stack([np.full(6, 1.0), -np.logspace(-300, 0, 6), np.linspace(-1, 1, 6)])
    # 1 - s/r and -r/s around the face threshold _RHO_FACE = 750, on either side
    near_face = np.array([[1.0, -748.9, 1.0], [1.0, -749.1, 0.5], [1.0, -749.1, -0.5],
                          [-750.9, 1.0, -1.0], [-749.1, 1.0, 0.3], [-749.1, 1.0, -2.0]])
    points = np.concatenate(parts + [face, near_face])
    moderate = points[np.abs(points).max(axis=1) <= 1e100]
    scaled = moderate * 10.0 ** rng.choice([-150, -20, 0, 20, 150], (moderate.shape[0], 1))
    return np.ascontiguousarray(np.concatenate([points, scaled]))


def power_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Power-cone points ``(k, 3)`` and parameters ``alpha``: the awkward grid of
    test_cone_power (signs of x0, y0; z0 zero, 1e-300 ... 1e3; alpha near 0, 1/2, 1), a
    sequence of ``|z0| -> 0`` at alpha != 1/2, and random points."""
    points, alphas = power_awkward()
    shrinking = np.array([[1.0, -0.5, z] for z in 10.0 ** -np.arange(0.0, 320.0, 20.0)])
    random = rng.standard_normal((300, 3)) * 10.0 ** rng.uniform(-3, 3, (300, 1))
    return (np.ascontiguousarray(np.concatenate([points, shrinking, -shrinking, random])),
            np.concatenate([alphas, np.full(2 * len(shrinking), 0.3),
                            rng.uniform(0.02, 0.98, 300)]))


def sym3_sample(rng: np.random.Generator) -> np.ndarray:
    """Symmetric 3x3 blocks ``(k, 3, 3)``: random, repeated eigenvalues (double and
    triple), diagonal, zero, rank one, tiny off-diagonal entries, scales 1e+-200."""
    def rotated(eigenvalues):
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        return (Q * eigenvalues) @ Q.T

    blocks = [rng.standard_normal((3, 3)) for _ in range(60)]
    blocks += [rotated(lam) for lam in ([1.0, 1.0, 2.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0],
                                        [1.0, 1.0, 0.0], [1e-7, 0.3, 1.0], [0.0, 0.0, 0.0])]
    blocks += [np.diag([0.2, 0.7, 0.0]), np.zeros((3, 3)), np.eye(3), np.ones((3, 3)),
               np.diag([1.0, 2.0, 3.0]) + 1e-300 * np.ones((3, 3))]
    stack = np.array(blocks)
    stack = 0.5 * (stack + stack.transpose(0, 2, 1))
    return np.concatenate([stack, stack[:20] * 1e200, stack[:20] * 1e-200])


def suite_inputs(seed: int = 18) -> dict[str, np.ndarray]:
    """Inputs of :func:`kernel_suite.run_all`: every sample above, a gather map."""
    rng = np.random.default_rng(seed)
    soc_v, soc_offsets = soc_sample(rng)
    power_v, power_alpha = power_sample(rng)
    nnz, sources, batch = 41, 17, 3
    counts = rng.integers(0, 6, nnz)
    term_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    terms = int(term_ptr[-1])
    return {
        "soc_v": soc_v, "soc_offsets": soc_offsets,
        "soc_x": rng.standard_normal(soc_v.size),
        "exp_v": exp_sample(rng).ravel(),
        "power_v": power_v.ravel(), "power_alpha": power_alpha,
        "sym3": np.ascontiguousarray(sym3_sample(rng).ravel()),
        "gather_term_ptr": term_ptr, "gather_left": rng.integers(0, sources, terms),
        "gather_right": rng.integers(0, sources, terms),
        "gather_weight": rng.standard_normal(terms),
        "gather_src": rng.standard_normal((batch, sources)),
    }
