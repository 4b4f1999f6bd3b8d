"""Cone projections and the blocks of ``D``, ``E`` and ``Π₀`` on an array namespace,
for a batch of points of one cone product at once.

The orchestration of :mod:`diffqcp_np.cones.projection` and :mod:`~diffqcp_np.cones.
reduced` (Moreau's decomposition for the duals, the kinds' slices) written once against
``xp`` and a kernel table ``kernels`` with the signatures of
:data:`~._signatures.KERNELS`: on a GPU ``xp`` is CuPy and ``kernels`` a
:class:`~._modules.DeviceKernels`; the tests run it with NumPy and the host build of
the same kernels. PSD blocks go through batched ``eigh`` (:mod:`.psd`). Points are the
rows of a ``(B, m)`` array; each kind is one launch for the whole batch.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..backend import array_module
from ..cones.spec import ConeSpec
from . import psd
from .layout import BlockLayout


@functools.lru_cache(maxsize=64)
def _tiled_offsets(dims: tuple[int, ...], batch: int) -> np.ndarray:
    """Cone offsets of ``batch`` copies of SOCs of dimensions ``dims`` back to back."""
    one = np.concatenate(([0], np.cumsum(dims, dtype=np.int64)))
    shifts = np.arange(batch, dtype=np.int64)[:, None] * one[-1]
    return np.concatenate(((one[:-1] + shifts).ravel(), [batch * one[-1]])).astype(np.int64)


def _flat(x: Any, xp: Any) -> Any:
    """The rows of ``x`` back to back, as a new contiguous vector."""
    return xp.reshape(xp.asarray(x, copy=True), (-1,))


def _psd_groups(spec: ConeSpec) -> list[tuple[int, np.ndarray]]:
    """``(side, columns)`` per distinct PSD side: the positions (relative to the PSD
    rows) of each block's vec entries, ``(blocks, k(k+1)/2)``."""
    sizes = np.array([k * (k + 1) // 2 for k in spec.psd], np.int64)
    starts = np.cumsum(sizes) - sizes
    sides = np.array(spec.psd, np.int64)
    return [(k, starts[sides == k][:, None] + np.arange(k * (k + 1) // 2))
            for k in dict.fromkeys(spec.psd)]


def _take_columns(x: Any, columns: np.ndarray, xp: Any) -> Any:
    """``x[:, columns]`` for a 2-D integer array of columns: ``(B, *columns.shape)``."""
    picked = xp.take(x, xp.asarray(columns.reshape(-1)), axis=1)
    return xp.reshape(picked, (x.shape[0],) + columns.shape)


def _power_flips(spec: ConeSpec, dual: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(flip, |α|)`` per power cone: ``flip`` where the projection goes through
    Moreau's decomposition (``K_α`` for α > 0 and ``K_|α|*`` for α < 0 are primal)."""
    alphas = np.asarray(spec.power, float)
    return ~((alphas > 0) != dual), np.abs(alphas)


def _moreau_signs(spec: ConeSpec, dual: bool) -> np.ndarray:
    """Per exponential, dual exponential and power cone (in row order), whether its
    projection is ``v + Π(−v)`` with Π the kernel's primal projection."""
    return np.concatenate([np.full(spec.exp, dual), np.full(spec.exp_dual, not dual),
                           _power_flips(spec, dual)[0]])


def _three_by_three(x3: Any, spec: ConeSpec, dual: bool, kernels: Any, xp: Any,
                    jacobian: bool) -> Any:
    """Projections ``(B, 3k)`` or Jacobians ``(B, k, 3, 3)`` of the exponential, dual
    exponential and power cones (rows ``x3``, ``(B, 3k)``), one launch per kernel."""
    batch, k = x3.shape[0], x3.shape[1] // 3
    flip = xp.asarray(_moreau_signs(spec, dual))[None, :, None]
    points = xp.reshape(x3, (batch, k, 3))
    w = xp.where(flip, -points, points)
    n_exp = spec.exp + spec.exp_dual
    width = 9 if jacobian else 3
    kind = "jacobian" if jacobian else "project"
    parts = []
    for cones, kernel, extra in (
            (slice(0, n_exp), f"{kind}_exp", ()),
            (slice(n_exp, k), f"{kind}_power",
             (xp.asarray(np.tile(_power_flips(spec, dual)[1], batch)),))):
        count = cones.stop - cones.start
        if count == 0:
            continue
        result = xp.empty(batch * count * width)
        getattr(kernels, kernel)(_flat(w[:, cones, :], xp), *extra, batch * count, result)
        parts.append(xp.reshape(result, (batch, count, width)))
    values = xp.concat(parts, axis=1)
    if jacobian:
        identity = xp.reshape(xp.asarray(np.eye(3).ravel()), (1, 1, 9))
        values = xp.where(flip, identity - values, values)
        return xp.reshape(values, (batch, k, 3, 3))
    values = xp.where(flip, points + values, values)
    return xp.reshape(values, (batch, 3 * k))


def _psd_parts(x_psd: Any, spec: ConeSpec, xp: Any, compute) -> list[Any]:
    """``compute(k, vecs)`` for each PSD side over the batch's blocks of that side,
    each result row (one per block, ``(n, w)``) put back in row order: one ``(B, ·)``
    array per output of ``compute``."""
    batch = x_psd.shape[0]
    grouped, widths, order = [], [], []
    for k, columns in _psd_groups(spec):
        blocks = xp.reshape(_take_columns(x_psd, columns, xp), (-1, columns.shape[1]))
        results = compute(k, blocks)
        grouped.append([xp.reshape(r, (batch, -1)) for r in results])
        widths.append([int(np.prod(r.shape[1:])) * columns.shape[0] for r in results])
        order.append(np.flatnonzero(np.asarray(spec.psd) == k))
    outputs = []
    for t in range(len(grouped[0]) if grouped else 0):
        # column index of each block's values in the concatenation of the groups
        starts, block_width, first = {}, {}, 0
        for g, blocks in enumerate(order):
            w = widths[g][t] // blocks.size
            for rank, block in enumerate(blocks):
                starts[int(block)], block_width[int(block)] = first + rank * w, w
            first += widths[g][t]
        index = np.concatenate([np.arange(starts[b], starts[b] + block_width[b])
                                for b in range(len(spec.psd))])
        stacked = xp.concat([group[t] for group in grouped], axis=1)
        outputs.append(xp.take(stacked, xp.asarray(index), axis=1))
    return outputs


def project(x: Any, spec: ConeSpec, kernels: Any, xp: Any = None, dual: bool = False) -> Any:
    """Projections of the rows of ``x`` (``(B, m)``) onto the cone product ``spec`` (or
    onto its dual cone); ``xp`` is the namespace of ``x`` by default."""
    xp = array_module(x) if xp is None else xp
    batch = x.shape[0]
    sl = spec.slices()
    parts = [x[:, sl["z"]] if dual else xp.zeros((batch, spec.zero))]
    if spec.nonneg:
        out = xp.empty(batch * spec.nonneg)
        kernels.project_nonneg(_flat(x[:, sl["l"]], xp), out.shape[0], out)
        parts.append(xp.reshape(out, (batch, -1)))
    if spec.soc:
        offsets = _tiled_offsets(tuple(spec.soc), batch)
        out = xp.empty(int(offsets[-1]))
        kernels.project_soc(_flat(x[:, sl["q"]], xp), xp.asarray(offsets),
                            offsets.size - 1, out)
        parts.append(xp.reshape(out, (batch, -1)))
    if spec.psd:
        parts += _psd_parts(x[:, sl["s"]], spec, xp, lambda k, v: (psd.project(v, k, xp),))
    if x.shape[1] > sl["ep"].start:
        parts.append(_three_by_three(x[:, sl["ep"].start:], spec, dual, kernels, xp, False))
    return xp.concat(parts, axis=1)


def jacobian_parts(v: Any, layout: BlockLayout, kernels: Any, xp: Any = None,
                   dual: bool = True) -> tuple[Any, Any, Any]:
    """``D = DΠ_{K*}(v)`` (``DΠ_K(v)`` if not ``dual``), ``E = D(I − D) + Π₀`` and
    ``Π₀`` of the rows of ``v`` (``(B, m)``), each ``(B, layout.size)`` in the layout's
    storage order.

    The same values as :func:`~diffqcp_np.cones.reduced.reduced_parts` (bit for bit
    with the host build, but for PSD blocks, whose ``eigh`` differs from the CPU's by
    rounding), on a pattern that does not depend on ``v``.
    """
    xp = array_module(v) if xp is None else xp
    spec, batch = layout.spec, v.shape[0]
    sl = spec.slices()
    diagonal = [xp.full((batch, spec.zero), 1.0 if dual else 0.0)]
    if spec.nonneg:
        out = xp.empty(batch * spec.nonneg)
        kernels.jacobian_nonneg(_flat(v[:, sl["l"]], xp), out.shape[0], out)
        diagonal.append(xp.reshape(out, (batch, -1)))
    d = _flat(xp.concat(diagonal, axis=1), xp)
    e, null = xp.empty(d.shape[0]), xp.empty(d.shape[0])
    kernels.eigen_weights(d, d.shape[0], e, null)
    parts = [[xp.reshape(a, (batch, -1)) for a in (d, e, null)]]
    if spec.soc:
        offsets = _tiled_offsets(tuple(spec.soc), batch)
        count = offsets.size - 1
        block_offsets = _tiled_offsets(tuple(np.diff(layout.soc_block_offsets)), batch)
        codes, ratios = xp.empty(count, dtype=xp.int8), xp.empty(count)
        units = xp.empty(int(offsets[-1]))
        offsets_x = xp.asarray(offsets)
        kernels.soc_jacobian_data(_flat(v[:, sl["q"]], xp), offsets_x, count, codes, ratios,
                                  units)
        blocks = [xp.empty(int(block_offsets[-1])) for _ in range(3)]
        kernels.soc_reduced_blocks(offsets_x, count, codes, ratios, units,
                                   xp.asarray(block_offsets), layout.lift_above, *blocks)
        parts.append([xp.reshape(a, (batch, -1)) for a in blocks])
    if spec.psd:
        def weights(B):
            flat = _flat(B, xp)
            e_w, null_w = xp.empty(flat.shape[0]), xp.empty(flat.shape[0])
            kernels.eigen_weights(flat, flat.shape[0], e_w, null_w)
            return xp.reshape(e_w, B.shape), xp.reshape(null_w, B.shape)

        parts.append(_psd_parts(v[:, sl["s"]], spec, xp,
                                lambda k, x: psd.dense_jacobians(x, k, xp, weights)))
    if v.shape[1] > sl["ep"].start:
        jac = _three_by_three(v[:, sl["ep"].start:], spec, dual, kernels, xp, True)
        flat = _flat(jac, xp)
        count = flat.shape[0] // 9
        e, null = xp.empty(flat.shape[0]), xp.empty(flat.shape[0])
        kernels.sym3_reduced_parts(flat, count, e, null)
        parts.append([xp.reshape(a, (batch, -1)) for a in (flat, e, null)])
    return tuple(xp.concat([p[t] for p in parts], axis=1) for t in range(3))
