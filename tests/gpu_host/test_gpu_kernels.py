"""The CUDA kernels, built for the host through the shim, against the Numba kernels.

Every kernel runs under several launch geometries (grid-stride loops must cover every
work item exactly once for any grid and block, (1, 1) included) into outputs poisoned
with NaN (or an invalid region code), and must agree bit for bit with its Numba twin:
the host build, like Numba, does IEEE arithmetic in source order without contracting
multiply-adds, and both call glibc's ``exp``/``log``/``pow``.
"""

from __future__ import annotations

import numpy as np
import pytest
from cone_samples import GEOMETRIES, exp_sample, power_sample, soc_sample, sym3_sample

from diffqcp_np.cones import _soc_numba as soc
from diffqcp_np.cones._exp_numba import jacobian_exp, project_exp
from diffqcp_np.cones._power_numba import jacobian_power, project_power
from diffqcp_np.cones._sym3_eigen_numba import eigh_3x3
from diffqcp_np.cones.reduced import (
    LIFT_SOC_ABOVE,
    NULL_EIGENVALUE,
    _e_weights,
    _null_weights,
    _small_block_parts,
)
from diffqcp_np.derivative._reduced_numba import shifted_diagonal

#: Written by no kernel: an output entry still holding it was never written.
_CODE_POISON = 127


def poisoned(shape, dtype=np.float64) -> np.ndarray:
    return np.full(shape, _CODE_POISON if dtype == np.int8 else np.nan, dtype=dtype)


def assert_bitwise(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal bit for bit (signed zeros and NaN payloads included)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, b = actual.reshape(-1).view(np.uint8), expected.reshape(-1).view(np.uint8)
    if not np.array_equal(a, b):
        bad = actual.reshape(-1) != expected.reshape(-1)
        raise AssertionError(f"{int(bad.sum())} of {actual.size} entries differ "
                             f"(e.g. {actual.reshape(-1)[bad][:3]} vs "
                             f"{expected.reshape(-1)[bad][:3]}); signed zeros: "
                             f"{not bad.any()}")


@pytest.fixture(params=GEOMETRIES, ids=lambda g: "default" if g is None else f"{g[0]}x{g[1]}")
def kernels(request, host_kernels):
    geometry = request.param
    return host_kernels if geometry is None else host_kernels.with_geometry(*geometry)


@pytest.fixture(scope="module")
def soc_points():
    return soc_sample(np.random.default_rng(18))


def test_orthant(kernels):
    v = np.concatenate([[0.0, -0.0, 5e-324, -5e-324, 1e308, -1e308, 1.0, -1.0],
                        np.random.default_rng(1).standard_normal(61)])
    for name, oracle in (("project_nonneg", soc.project_nonneg),
                         ("jacobian_nonneg", soc.jacobian_nonneg)):
        out = poisoned(v.size)
        getattr(kernels, name)(v, v.size, out)
        assert_bitwise(out, oracle(v))


def soc_data(kernels, v, offsets):
    k = offsets.size - 1
    codes, ratios, units = poisoned(k, np.int8), poisoned(k), poisoned(v.size)
    kernels.soc_jacobian_data(v, offsets, k, codes, ratios, units)
    return codes, ratios, units


def test_soc_projection_and_jacobian_data(kernels, soc_points):
    v, offsets = soc_points
    out = poisoned(v.size)
    kernels.project_soc(v, offsets, offsets.size - 1, out)
    assert_bitwise(out, soc.project_soc(v, offsets))
    data = soc_data(kernels, v, offsets)
    expected = soc.soc_jacobian_data(v, offsets)
    for actual, oracle in zip(data, expected):
        assert_bitwise(actual, oracle)
    assert set(np.unique(data[0])) == {0, 1, 2}  # the sample has every region


def test_soc_jacobian_apply(kernels, soc_points):
    v, offsets = soc_points
    data = soc.soc_jacobian_data(v, offsets)
    x = np.random.default_rng(2).standard_normal(v.size)
    out = poisoned(v.size)
    kernels.soc_jacobian_apply(x, offsets, offsets.size - 1, *data, out)
    assert_bitwise(out, soc.soc_jacobian_apply(x, offsets, *data))


def superset_soc_blocks(offsets, codes, ratios, units, lift_above):
    """soc_reduced_triplets' D, E and Pi_0 written into the kernel's layout: a dense
    row-major block per cone of dimension <= lift_above (zeros where the triplets have
    no entry), the diagonal of each larger cone."""
    dims = np.diff(offsets)
    sizes = np.where(dims <= lift_above, dims * dims, dims)
    block_offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    rows, cols, *values = soc.soc_reduced_triplets(offsets, codes, ratios, units, lift_above)
    cone = np.searchsorted(offsets, rows, side="right") - 1
    start, dim = offsets[cone], dims[cone]
    position = np.where(dim <= lift_above,
                        block_offsets[cone] + (rows - start) * dim + (cols - start),
                        block_offsets[cone] + (rows - start))
    expected = []
    for vals in values:
        out = np.zeros(block_offsets[-1])
        out[position] = vals
        expected.append(out)
    return block_offsets, expected


@pytest.mark.parametrize("lift_above", [LIFT_SOC_ABOVE, 4, 0])
def test_soc_reduced_blocks(kernels, soc_points, lift_above):
    v, offsets = soc_points
    data = soc.soc_jacobian_data(v, offsets)
    block_offsets, expected = superset_soc_blocks(offsets, *data, lift_above)
    outs = [poisoned(block_offsets[-1]) for _ in range(3)]
    kernels.soc_reduced_blocks(offsets, offsets.size - 1, *data, block_offsets, lift_above,
                               *outs)
    for actual, oracle in zip(outs, expected):
        assert_bitwise(actual, oracle)


@pytest.fixture(scope="module")
def exp_points():
    return exp_sample(np.random.default_rng(19)).ravel()


def test_exp_projection_and_jacobian(kernels, exp_points):
    v = exp_points
    k = v.size // 3
    out, jac = poisoned(v.size), poisoned(9 * k)
    kernels.project_exp(v, k, out)
    kernels.jacobian_exp(v, k, jac)
    assert_bitwise(out, project_exp(v))
    assert_bitwise(jac.reshape(k, 3, 3), jacobian_exp(v))


@pytest.fixture(scope="module")
def power_points():
    points, alphas = power_sample(np.random.default_rng(20))
    return points.ravel(), alphas


def test_power_projection_and_jacobian(kernels, power_points):
    v, alpha = power_points
    k = alpha.size
    out, jac = poisoned(v.size), poisoned(9 * k)
    kernels.project_power(v, alpha, k, out)
    kernels.jacobian_power(v, alpha, k, jac)
    assert_bitwise(out, project_power(v, alpha))
    assert_bitwise(jac.reshape(k, 3, 3), jacobian_power(v, alpha))


@pytest.fixture(scope="module")
def sym3_blocks():
    """Random and awkward blocks, and the Jacobian blocks of the exp and power samples."""
    rng = np.random.default_rng(21)
    points, alphas = power_sample(rng)
    jacobians = [jacobian_exp(exp_sample(rng).ravel()), jacobian_power(points.ravel(), alphas),
                 np.eye(3) - jacobian_exp(exp_sample(rng).ravel())]
    return np.ascontiguousarray(np.concatenate([sym3_sample(rng)] + jacobians))


def test_sym3_eigh_and_reduced_parts(kernels, sym3_blocks):
    blocks = sym3_blocks
    k = blocks.shape[0]
    lam, vectors = poisoned(3 * k), poisoned(9 * k)
    kernels.sym3_eigh(blocks, k, lam, vectors)
    expected_lam, expected_vectors = eigh_3x3(blocks)
    assert_bitwise(lam.reshape(k, 3), expected_lam)
    assert_bitwise(vectors.reshape(k, 3, 3), expected_vectors)
    e, null = poisoned(9 * k), poisoned(9 * k)
    kernels.sym3_reduced_parts(blocks, k, e, null)
    expected_e, expected_null = _small_block_parts(blocks)
    assert_bitwise(e.reshape(k, 3, 3), expected_e)
    assert_bitwise(null.reshape(k, 3, 3), expected_null)


def test_eigen_weights(kernels):
    below = np.nextafter(NULL_EIGENVALUE, 0.0)
    lam = np.concatenate([[NULL_EIGENVALUE, below, 0.0, -0.0, -1e-3, 0.5, 1.0, 1.0 - 1e-16],
                          np.random.default_rng(3).uniform(-0.1, 1.1, 41)])
    e, null = poisoned(lam.size), poisoned(lam.size)
    kernels.eigen_weights(lam, lam.size, e, null)
    assert_bitwise(e, _e_weights(lam))
    assert_bitwise(null, _null_weights(lam))


def random_gather_map(rng, nnz, sources):
    """Terms per entry (0 to 5, some entries with none), random sources and weights."""
    counts = rng.integers(0, 6, nnz)
    counts[::7] = 0
    term_ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    terms = int(term_ptr[-1])
    return (term_ptr, rng.integers(0, sources, terms), rng.integers(0, sources, terms),
            rng.choice([1.0, -1.0, 0.5, rng.standard_normal()], terms))


def test_gather_values(kernels):
    rng = np.random.default_rng(4)
    batch, sources, nnz = 3, 23, 37
    term_ptr, left, right, weight = random_gather_map(rng, nnz, sources)
    src = rng.standard_normal((batch, sources))
    out = poisoned(batch * nnz)
    kernels.gather_values(src, sources, term_ptr, left, right, weight, nnz, batch, out)
    expected = np.zeros((batch, nnz))
    for b in range(batch):
        for k in range(nnz):
            acc = 0.0  # Python floats: IEEE doubles, summed in term order
            for t in range(term_ptr[k], term_ptr[k + 1]):
                acc += float(weight[t]) * float(src[b, left[t]]) * float(src[b, right[t]])
            expected[b, k] = acc
    assert_bitwise(out.reshape(batch, nnz), expected)


def test_shift_diagonal(kernels):
    rng = np.random.default_rng(5)
    size, n, batch = 9, 4, 3
    counts = rng.integers(1, 4, size)  # every column stores its diagonal, last
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    values = rng.standard_normal((batch, indptr[-1]))
    delta = np.array([1e-9, 0.5, 0.0])
    expected = np.stack([shifted_diagonal(indptr, values[b], n, delta[b])
                         for b in range(batch)])
    kernels.shift_diagonal(values, indptr[-1], indptr[1:] - 1, size, n, delta, batch)
    assert_bitwise(values, expected)


def test_launch_checks_arguments(host_kernels):
    v = np.zeros(4)
    with pytest.raises(TypeError, match="project_nonneg takes 3 arguments"):
        host_kernels.project_nonneg(v, 4)
    with pytest.raises(TypeError, match="v must be an array of float64"):
        host_kernels.project_nonneg(v.astype(np.float32), 4, v)
    with pytest.raises(TypeError, match="out must be C-contiguous"):
        host_kernels.project_nonneg(v, 2, np.zeros(8)[::2])
    with pytest.raises(TypeError, match="out is written and must be writeable"):
        frozen = np.zeros(4)
        frozen.flags.writeable = False
        host_kernels.project_nonneg(v, 4, frozen)
    with pytest.raises(TypeError, match="n must be a scalar"):
        host_kernels.project_nonneg(v, np.array([4]), v)
