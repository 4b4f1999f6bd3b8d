// Nonnegative orthant and second-order cones: projections, Jacobian data, Jacobian
// products and the blocks of D, E and Pi_0 for the reduced derivative system.
// The GPU twins of diffqcp_np/cones/_soc_numba.py, operation for operation.
// An SOC Jacobian is kept as a region code per cone (0 interior, 1 polar, 2 boundary),
// the ratio a = t/||z|| and the unit tail u = z/||z||.

#define DQ_SOC_INTERIOR 0
#define DQ_SOC_POLAR 1
#define DQ_SOC_BOUNDARY 2

extern "C" __global__ void project_nonneg(const double* __restrict__ v, long long n,
                                          double* __restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = v[i] > 0.0 ? v[i] : 0.0; }
}

// Diagonal of the orthant projection's Jacobian: 1 if v > 0, 0 if v < 0, 1/2 at 0.
extern "C" __global__ void jacobian_nonneg(const double* __restrict__ v, long long n,
                                           double* __restrict__ out) {
    GRID_STRIDE(i, n) { out[i] = v[i] > 0.0 ? 1.0 : (v[i] < 0.0 ? 0.0 : 0.5); }
}

// ||v[start+1:stop]|| scaled by the largest magnitude (no overflow or underflow).
__device__ double soc_norm_tail(const double* v, long long start, long long stop) {
    double scale = 0.0;
    for (long long j = start + 1; j < stop; ++j) {
        double a = fabs(v[j]);
        if (a > scale) scale = a;
    }
    if (scale == 0.0) return 0.0;
    double total = 0.0;
    for (long long j = start + 1; j < stop; ++j) {
        double q = v[j] / scale;
        total += q * q;
    }
    return scale * sqrt(total);
}

// Projection onto a product of SOCs; cone c is v[offsets[c]:offsets[c+1]] = (t, z).
extern "C" __global__ void project_soc(const double* __restrict__ v,
                                       const long long* __restrict__ offsets, long long ncones,
                                       double* __restrict__ out) {
    GRID_STRIDE(c, ncones) {
        long long start = offsets[c], stop = offsets[c + 1];
        double t = v[start];
        double rho = soc_norm_tail(v, start, stop);
        if (rho <= t) {
            for (long long j = start; j < stop; ++j) out[j] = v[j];
        } else if (rho <= -t) {
            for (long long j = start; j < stop; ++j) out[j] = 0.0;
        } else {
            double scale = 0.5 * (1.0 + t / rho);
            out[start] = scale * rho;
            for (long long j = start + 1; j < stop; ++j) out[j] = scale * v[j];
        }
    }
}

// Region codes, ratios t/||z|| (0 off the boundary region) and unit tails z/||z||
// (0 at each cone's t and off the boundary region) of each SOC.
extern "C" __global__ void soc_jacobian_data(const double* __restrict__ v,
                                             const long long* __restrict__ offsets,
                                             long long ncones, signed char* __restrict__ codes,
                                             double* __restrict__ ratios,
                                             double* __restrict__ units) {
    GRID_STRIDE(c, ncones) {
        long long start = offsets[c], stop = offsets[c + 1];
        double t = v[start];
        double rho = soc_norm_tail(v, start, stop);
        units[start] = 0.0;
        if (rho <= t || rho <= -t) {
            codes[c] = rho <= t ? DQ_SOC_INTERIOR : DQ_SOC_POLAR;
            ratios[c] = 0.0;
            for (long long j = start + 1; j < stop; ++j) units[j] = 0.0;
        } else {
            codes[c] = DQ_SOC_BOUNDARY;
            ratios[c] = t / rho;
            for (long long j = start + 1; j < stop; ++j) units[j] = v[j] / rho;
        }
    }
}

// The SOC projection Jacobians applied to x, O(dim) per cone.
extern "C" __global__ void soc_jacobian_apply(const double* __restrict__ x,
                                              const long long* __restrict__ offsets,
                                              long long ncones,
                                              const signed char* __restrict__ codes,
                                              const double* __restrict__ ratios,
                                              const double* __restrict__ units,
                                              double* __restrict__ out) {
    GRID_STRIDE(c, ncones) {
        long long start = offsets[c], stop = offsets[c + 1];
        int code = codes[c];
        if (code == DQ_SOC_INTERIOR) {
            for (long long j = start; j < stop; ++j) out[j] = x[j];
        } else if (code == DQ_SOC_POLAR) {
            for (long long j = start; j < stop; ++j) out[j] = 0.0;
        } else {
            double a = ratios[c];
            double ux = 0.0;
            for (long long j = start + 1; j < stop; ++j) ux += units[j] * x[j];
            out[start] = 0.5 * (x[start] + ux);
            for (long long j = start + 1; j < stop; ++j)
                out[j] = 0.5 * (units[j] * x[start] + (1.0 + a) * x[j] - a * units[j] * ux);
        }
    }
}

// D, E = D(I - D) + Pi_0 and Pi_0 of each SOC block, on a pattern that does not depend
// on the point: cone c writes at block_offsets[c] a dense dim x dim block (row-major)
// if dim <= lift_above, else its dim diagonal entries (the diagonal part of a lifted
// boundary block: 1/2(1+a), 1/4(1-a^2), 0; the rank-two rest is the caller's).
// Interior: D = I, E = Pi_0 = 0; polar: D = 0, E = Pi_0 = I; boundary: as
// soc_reduced_triplets in _soc_numba.py.
extern "C" __global__ void soc_reduced_blocks(const long long* __restrict__ offsets,
                                              long long ncones,
                                              const signed char* __restrict__ codes,
                                              const double* __restrict__ ratios,
                                              const double* __restrict__ units,
                                              const long long* __restrict__ block_offsets,
                                              long long lift_above, double* __restrict__ d,
                                              double* __restrict__ e,
                                              double* __restrict__ null) {
    GRID_STRIDE(c, ncones) {
        long long start = offsets[c], stop = offsets[c + 1], dim = stop - start;
        long long pos = block_offsets[c];
        int code = codes[c];
        double half_plus = 0.5 * (1.0 + ratios[c]);
        double mid = half_plus * (1.0 - half_plus);
        if (dim > lift_above) {
            for (long long j = 0; j < dim; ++j, ++pos) {
                d[pos] = code == DQ_SOC_INTERIOR ? 1.0 : (code == DQ_SOC_POLAR ? 0.0 : half_plus);
                e[pos] = code == DQ_SOC_INTERIOR ? 0.0 : (code == DQ_SOC_POLAR ? 1.0 : mid);
                null[pos] = code == DQ_SOC_POLAR ? 1.0 : 0.0;
            }
            continue;
        }
        for (long long r = start; r < stop; ++r) {
            double ur = r == start ? 1.0 : -units[r];  // q = (e0 - u)/sqrt2, times sqrt2
            for (long long col = start; col < stop; ++col, ++pos) {
                double identity = r == col ? 1.0 : 0.0;
                if (code != DQ_SOC_BOUNDARY) {
                    d[pos] = code == DQ_SOC_INTERIOR ? identity : 0.0;
                    e[pos] = code == DQ_SOC_POLAR ? identity : 0.0;
                    null[pos] = e[pos];
                    continue;
                }
                double uc = col == start ? 1.0 : -units[col];
                double dv, proj;
                if (r == start && col == start) {
                    dv = 0.5;
                    proj = 1.0;
                } else if (r == start) {
                    dv = 0.5 * units[col];
                    proj = 0.0;
                } else if (col == start) {
                    dv = 0.5 * units[r];
                    proj = 0.0;
                } else {
                    dv = -0.5 * ratios[c] * units[r] * units[col];
                    proj = units[r] * units[col];
                    if (r == col) dv += half_plus;
                }
                double nv = 0.5 * ur * uc;
                d[pos] = dv;
                e[pos] = mid * (identity - proj) + nv;
                null[pos] = nv;
            }
        }
    }
}
