// Exponential cone K = cl{(r, s, t) : s > 0, s exp(r/s) <= t}: projection (Friberg's
// univariate root finding, safeguarded Newton) and Jacobian, one thread per cone.
// The GPU twin of diffqcp_np/cones/_exp_numba.py, operation for operation; see that
// module's docstring for the method. Constants as there.

#define DQ_EXP_RHO_MAX 1000.0
#define DQ_EXP_RHO_FACE 750.0
#define DQ_EXP_MAX_ITERS 200
#define DQ_EXP_NOISE (8.0 * 2.220446049250313e-16)
#define DQ_EXP_STEP_TOL (4.0 * 2.220446049250313e-16)
#define DQ_EXP_BOUND_SLACK 1e-12

#define DQ_EXP_IN_CONE 0
#define DQ_EXP_IN_POLAR 1
#define DQ_EXP_NEGATIVE 2
#define DQ_EXP_FACE 3
#define DQ_EXP_POLAR_FACE 4
#define DQ_EXP_ROOT 5

// Power of two 2^e with max(|r0|, |s0|, |t0|) in [2^e, 2^(e+1)) (0 if all are 0).
__device__ double exp_scale(double r0, double s0, double t0) {
    double amax = dq_max(dq_max(fabs(r0), fabs(s0)), fabs(t0));
    if (amax == 0.0) return 0.0;
    int e;
    frexp(amax, &e);
    return ldexp(1.0, e - 1);
}

// Region of (r, s, t), scaled to max-norm in [1, 2).
__device__ int exp_classify(double r, double s, double t) {
    if ((s > 0.0 && s * exp(r / s) <= t) || (s == 0.0 && r <= 0.0 && t >= 0.0))
        return DQ_EXP_IN_CONE;
    if ((r > 0.0 && r * exp(s / r - 1.0) <= -t) || (r == 0.0 && s <= 0.0 && t <= 0.0))
        return DQ_EXP_IN_POLAR;
    if (r <= 0.0 && s <= 0.0) return DQ_EXP_NEGATIVE;
    if (r > 0.0 && s <= 0.0 && 1.0 - s / r > DQ_EXP_RHO_FACE) return DQ_EXP_FACE;
    if (r <= 0.0 && r / s < -DQ_EXP_RHO_FACE) return DQ_EXP_POLAR_FACE;
    return DQ_EXP_ROOT;
}

// h(rho), h'(rho) and a bound on the terms h sums, all times e^-|rho|.
struct exp_h_value {
    double f, df, mag;
};

__device__ exp_h_value exp_h(double r, double s, double t, double rho) {
    double q = rho * rho - rho + 1.0;
    double lp = (rho - 1.0) * r + s;
    double ld = r - rho * s;
    double mp = fabs((rho - 1.0) * r) + fabs(s);
    double md = fabs(r) + fabs(rho * s);
    double dlp = rho * r + s;
    double dld = r + s - rho * s;
    double tq = (2.0 * rho - 1.0) * t;
    if (rho >= 0.0) {
        double e = exp(-rho);
        double e2 = e * e;
        double qt = q * t * e;
        return {lp - ld * e2 - qt, dlp + dld * e2 - tq * e, mp + md * e2 + fabs(qt)};
    }
    double e = exp(rho);
    double e2 = e * e;
    double qt = q * t * e;
    return {lp * e2 - ld - qt, dlp * e2 + dld - tq * e, mp * e2 + md + fabs(qt)};
}

// Shrink a clipped side of (lo, hi) by a doubling search from the other side.
__device__ void exp_expand(double r, double s, double t, double* lo, double* hi) {
    if (*hi == DQ_EXP_RHO_MAX && *lo > -DQ_EXP_RHO_MAX) {
        double step = 1.0;
        while (*lo + step < *hi) {
            double x = *lo + step;
            if (exp_h(r, s, t, x).f >= 0.0) {
                *hi = x;
                return;
            }
            *lo = x;
            step *= 2.0;
        }
    } else if (*lo == -DQ_EXP_RHO_MAX && *hi < DQ_EXP_RHO_MAX) {
        double step = 1.0;
        while (*hi - step > *lo) {
            double x = *hi - step;
            if (exp_h(r, s, t, x).f <= 0.0) {
                *lo = x;
                return;
            }
            *hi = x;
            step *= 2.0;
        }
    }
}

// Interval (lo, hi) holding the root of h (root case only).
__device__ void exp_bracket(double r, double s, double t, double* lo_out, double* hi_out) {
    double vlo = -DQ_EXP_RHO_MAX;
    double vhi = DQ_EXP_RHO_MAX;
    if (r > 0.0) vlo = dq_max(vlo, 1.0 - s / r);
    if (s > 0.0) vhi = dq_min(vhi, r / s);
    double lo = vlo;
    double hi = vhi;
    double dd = sqrt(r * r - r * s + s * s);
    if (t > 0.0) {
        double pmax = (2.0 * dd + 2.0 * s - r) / 3.0;
        if (pmax > 0.0) {
            double bound = log(t / pmax);
            lo = dq_max(lo, bound - DQ_EXP_BOUND_SLACK * dq_max(1.0, fabs(bound)));
        }
    } else if (t < 0.0) {
        double dmax = (2.0 * dd + 2.0 * r - s) / 3.0;
        if (dmax > 0.0) {
            double bound = -log(-t / dmax);
            hi = dq_min(hi, bound + DQ_EXP_BOUND_SLACK * dq_max(1.0, fabs(bound)));
        }
    }
    *lo_out = dq_min(lo, vhi);
    *hi_out = dq_max(hi, vlo);
    exp_expand(r, s, t, lo_out, hi_out);
}

// Root of h (the ratio r/s at the projection) by safeguarded Newton.
__device__ double exp_solve_rho(double r, double s, double t) {
    double lo, hi;
    exp_bracket(r, s, t, &lo, &hi);
    double x = 0.5 * (lo + hi);
    double dx_old = hi - lo;
    for (int iter = 0; iter < DQ_EXP_MAX_ITERS; ++iter) {
        exp_h_value h = exp_h(r, s, t, x);
        if (fabs(h.f) <= DQ_EXP_NOISE * h.mag) return x;
        if (h.f < 0.0)
            lo = x;
        else
            hi = x;
        bool newton_ok = h.df > 0.0 && fabs(2.0 * h.f) <= fabs(dx_old * h.df);
        double xn = newton_ok ? x - h.f / h.df : 0.5 * (lo + hi);
        if (!(lo < xn && xn < hi)) xn = 0.5 * (lo + hi);
        dx_old = xn - x;
        if (fabs(dx_old) <= DQ_EXP_STEP_TOL * dq_max(1.0, fabs(x)) || xn == lo || xn == hi)
            return xn;
        x = xn;
    }
    return x;
}

// Projection p(rho) on the boundary of K, without cancellation.
__device__ void exp_root_point(double r, double s, double t, double rho, double* p) {
    double q = rho * rho - rho + 1.0;
    if (rho > 0.0) {
        double e = exp(-rho);
        double pt = dq_max(t + dq_max(r - rho * s, 0.0) * e / q, 0.0);
        double ps = pt * e;
        p[0] = rho * ps;
        p[1] = ps;
        p[2] = pt;
        return;
    }
    double ps = dq_max((rho - 1.0) * r + s, 0.0) / q;
    p[0] = rho * ps;
    p[1] = ps;
    p[2] = ps * exp(rho);
}

// Projection of a point scaled to max-norm in [1, 2).
__device__ void exp_project_scaled(double r, double s, double t, double* p) {
    int region = exp_classify(r, s, t);
    if (region == DQ_EXP_IN_CONE) {
        p[0] = r;
        p[1] = s;
        p[2] = t;
    } else if (region == DQ_EXP_IN_POLAR) {
        p[0] = p[1] = p[2] = 0.0;
    } else if (region == DQ_EXP_NEGATIVE) {
        p[0] = r;
        p[1] = 0.0;
        p[2] = dq_max(t, 0.0);
    } else if (region == DQ_EXP_FACE) {
        p[0] = 0.0;
        p[1] = 0.0;
        p[2] = dq_max(t, 0.0);
    } else if (region == DQ_EXP_POLAR_FACE) {
        p[0] = r;
        p[1] = s;
        p[2] = s * exp(r / s);
    } else {
        exp_root_point(r, s, t, exp_solve_rho(r, s, t), p);
    }
}

// Projection onto K, cone by cone: v and out hold ncones points (r, s, t) back to back.
extern "C" __global__ void project_exp(const double* __restrict__ v, long long ncones,
                                       double* __restrict__ out) {
    GRID_STRIDE(c, ncones) {
        double r0 = v[3 * c], s0 = v[3 * c + 1], t0 = v[3 * c + 2];
        double sc = exp_scale(r0, s0, t0);
        if (sc == 0.0) {
            out[3 * c] = out[3 * c + 1] = out[3 * c + 2] = 0.0;
            continue;
        }
        double p[3];
        exp_project_scaled(r0 / sc, s0 / sc, t0 / sc, p);
        out[3 * c] = p[0] * sc;
        out[3 * c + 1] = p[1] * sc;
        out[3 * c + 2] = p[2] * sc;
    }
}

// The root-case Jacobian into the row-major 3x3 jac.
__device__ void exp_jacobian_root(double r, double s, double t, double* jac) {
    double rho = exp_solve_rho(r, s, t);
    double lp = dq_max((rho - 1.0) * r + s, 0.0);
    double ld = dq_max(r - rho * s, 0.0);
    // b: constraint normal, largest entry 1 in magnitude; w = a x b, a = (1, -rho, 0).
    double b[3], w[3], u[3];
    if (rho > 0.0) {
        b[0] = 1.0;
        b[1] = 1.0 - rho;
        b[2] = -exp(-rho);
        w[2] = 1.0;
    } else {
        b[0] = exp(rho);
        b[1] = b[0] * (1.0 - rho);
        b[2] = -1.0;
        w[2] = b[0];
    }
    w[0] = -rho * b[2];
    w[1] = -b[2];
    u[0] = b[1] * w[2] - b[2] * w[1];
    u[1] = b[2] * w[0] - b[0] * w[2];
    u[2] = b[0] * w[1] - b[1] * w[0];
    double bb = b[0] * b[0] + b[1] * b[1] + b[2] * b[2];
    double ww = w[0] * w[0] + w[1] * w[1] + w[2] * w[2];
    double cu = ld == 0.0 ? 0.0 : 1.0 / (bb * (lp / ld * bb + ww));
    for (int i = 0; i < 3; ++i) {
        for (int j = i; j < 3; ++j) {
            double val = (i == j ? 1.0 : 0.0) - b[i] * b[j] / bb - cu * u[i] * u[j];
            jac[3 * i + j] = val;
            jac[3 * j + i] = val;
        }
    }
}

// The Jacobian at a scaled point into the zeroed row-major 3x3 jac.
__device__ void exp_jacobian_scaled(double r, double s, double t, double* jac) {
    int region = exp_classify(r, s, t);
    if (region == DQ_EXP_IN_CONE) {
        jac[0] = jac[4] = jac[8] = 1.0;
    } else if (region == DQ_EXP_NEGATIVE) {
        jac[0] = r < 0.0 ? 1.0 : 0.0;
        jac[8] = t >= 0.0 ? 1.0 : 0.0;
    } else if (region == DQ_EXP_FACE) {
        jac[8] = t > 0.0 ? 1.0 : 0.0;
    } else if (region == DQ_EXP_POLAR_FACE) {
        jac[0] = 1.0;
        jac[4] = 1.0;
    } else if (region == DQ_EXP_ROOT) {
        exp_jacobian_root(r, s, t, jac);
    }
}

// Jacobians of the projection onto K: jac holds ncones row-major 3x3 blocks.
extern "C" __global__ void jacobian_exp(const double* __restrict__ v, long long ncones,
                                        double* __restrict__ jac) {
    GRID_STRIDE(c, ncones) {
        double* out = jac + 9 * c;
        for (int i = 0; i < 9; ++i) out[i] = 0.0;
        double r0 = v[3 * c], s0 = v[3 * c + 1], t0 = v[3 * c + 2];
        double sc = exp_scale(r0, s0, t0);
        if (sc == 0.0) continue;
        exp_jacobian_scaled(r0 / sc, s0 / sc, t0 / sc, out);
    }
}
