"""Every kernel run once on the awkward samples: shared by the sanitizer test (run in a
subprocess against an instrumented build) and the FMA test (against the FMA build).

Only NumPy and the host harness are imported here, so that the subprocess need not load
Numba under the sanitizer.
"""

from __future__ import annotations

import numpy as np


def run_all(kernels, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of every kernel on ``inputs`` (from :func:`suite_inputs`), by name."""
    out: dict[str, np.ndarray] = {}

    def empty(size, dtype=np.float64):
        return np.full(size, 127 if dtype == np.int8 else np.nan, dtype=dtype)

    v, offsets = inputs["soc_v"], inputs["soc_offsets"]
    k = offsets.size - 1
    for name in ("project_nonneg", "jacobian_nonneg"):
        out[name] = empty(v.size)
        getattr(kernels, name)(v, v.size, out[name])
    out["project_soc"] = empty(v.size)
    kernels.project_soc(v, offsets, k, out["project_soc"])
    codes, ratios, units = empty(k, np.int8), empty(k), empty(v.size)
    kernels.soc_jacobian_data(v, offsets, k, codes, ratios, units)
    out.update(soc_codes=codes, soc_ratios=ratios, soc_units=units)
    out["soc_apply"] = empty(v.size)
    kernels.soc_jacobian_apply(inputs["soc_x"], offsets, k, codes, ratios, units,
                               out["soc_apply"])
    dims = np.diff(offsets)
    lift = 8
    block_offsets = np.concatenate(
        ([0], np.cumsum(np.where(dims <= lift, dims * dims, dims)))).astype(np.int64)
    blocks = [empty(block_offsets[-1]) for _ in range(3)]
    kernels.soc_reduced_blocks(offsets, k, codes, ratios, units, block_offsets, lift, *blocks)
    out.update(soc_d=blocks[0], soc_e=blocks[1], soc_null=blocks[2])

    for kind, args in (("exp", (inputs["exp_v"],)),
                       ("power", (inputs["power_v"], inputs["power_alpha"]))):
        count = args[0].size // 3
        proj, jac = empty(3 * count), empty(9 * count)
        getattr(kernels, f"project_{kind}")(*args, count, proj)
        getattr(kernels, f"jacobian_{kind}")(*args, count, jac)
        out[f"project_{kind}"], out[f"jacobian_{kind}"] = proj, jac

    blocks3 = inputs["sym3"]
    count = blocks3.size // 9
    lam, vectors, e, null = empty(3 * count), empty(9 * count), empty(9 * count), empty(9 * count)
    kernels.sym3_eigh(blocks3, count, lam, vectors)
    kernels.sym3_reduced_parts(blocks3, count, e, null)
    out.update(sym3_lam=lam, sym3_vectors=vectors, sym3_e=e, sym3_null=null)
    weights = [empty(lam.size), empty(lam.size)]
    kernels.eigen_weights(lam, lam.size, *weights)
    out.update(weights_e=weights[0], weights_null=weights[1])

    term_ptr, left, right, weight = (inputs[f"gather_{n}"]
                                     for n in ("term_ptr", "left", "right", "weight"))
    src = inputs["gather_src"]
    batch, stride = src.shape
    nnz = term_ptr.size - 1
    out["gather"] = empty(batch * nnz)
    kernels.gather_values(src, stride, term_ptr, left, right, weight, nnz, batch, out["gather"])
    shifted = out["gather"].copy()
    diagonal = np.arange(0, nnz, 3, dtype=np.int64)
    kernels.shift_diagonal(shifted, nnz, diagonal, diagonal.size, diagonal.size // 2,
                           np.linspace(1e-9, 1.0, batch), batch)
    out["shifted"] = shifted
    return out
