// 3-D power cones K_alpha = {(x, y, z) : x^alpha y^(1-alpha) >= |z|, x, y >= 0}:
// projection (bracketed Newton steps in a log variable) and Jacobian, one thread per
// cone. The GPU twin of diffqcp_np/cones/_power_numba.py, operation for operation; see
// that module's docstring for the method. Constants as there.

#define DQ_POW_NEWTON_TOL 1e-14
#define DQ_POW_MAX_ITERS 200
#define DQ_POW_TINY 1e-280

// Positive root x of x^2 - x0 x - c lam = 0, without cancellation.
__device__ double pow_root_xi(double x0, double lam, double c) {
    double a = sqrt(x0 * x0 + 4.0 * c * lam);
    if (x0 >= 0.0) return 0.5 * (x0 + a);
    return 2.0 * c * lam / (a - x0);
}

// Boundary point for given r and d = rho - r, and the quantities of f.
struct pow_terms {
    double x, y, p, q, n, f;
};

__device__ pow_terms pow_boundary_terms(double x0, double y0, double r, double d,
                                        double alpha) {
    double beta = 1.0 - alpha;
    double lam = r * d;
    pow_terms out;
    out.x = pow_root_xi(x0, lam, alpha);
    out.y = pow_root_xi(y0, lam, beta);
    double xx = out.x * out.x / alpha;
    double yy = out.y * out.y / beta;
    out.p = xx + lam;
    out.q = yy + lam;
    double r2 = r * r;
    out.n = alpha * (xx + r2) / out.p + beta * (yy + r2) / out.q;
    out.f = alpha * log(out.x) + beta * log(out.y) - log(r);
    return out;
}

// Limit of r / rho as rho -> 0 with x0, y0, alpha fixed (d z / d z0 at z0 = 0).
__device__ double pow_limit_gain(double x0, double y0, double alpha) {
    if (x0 <= 0.0 && y0 <= 0.0) return 0.0;
    if (x0 > 0.0 && y0 > 0.0) return 1.0;
    if (x0 <= 0.0) {  // exchange the roles of x and y so that x0 > 0 >= y0
        double swap = x0;
        x0 = y0;
        y0 = swap;
        alpha = 1.0 - alpha;
    }
    if (y0 == 0.0 || alpha > 0.5) return 1.0;
    if (alpha < 0.5) return 0.0;
    return x0 / (x0 - 2.0 * y0);  // k / (1 + k) with k = x0 / (2 |y0|)
}

// Root of f on (0, rho): r and d = rho - r (the limit where lam = r d would underflow).
__device__ void pow_solve_boundary(double x0, double y0, double rho, double alpha,
                                   double* r_out, double* d_out) {
    if (rho * rho <= 4.0 * DQ_POW_TINY) {
        double gain = pow_limit_gain(x0, y0, alpha);
        *r_out = gain * rho;
        *d_out = (1.0 - gain) * rho;
        return;
    }
    double half = 0.5 * rho;
    double floor_s = 2.0 * DQ_POW_TINY / rho;  // smallest s evaluated: lam >= TINY
    double f_half = pow_boundary_terms(x0, y0, half, half, alpha).f;
    if (f_half == 0.0) {
        *r_out = half;
        *d_out = half;
        return;
    }
    // s is r (upper false) or d (upper true) in (0, rho/2]; g = f (resp. -f) decreases
    // in s with g(0+) > 0 > g(rho/2).
    bool upper = f_half > 0.0;
    double lo = 0.0;
    double hi = half;
    double s = half;
    for (int iter = 0; iter < DQ_POW_MAX_ITERS; ++iter) {
        double other = rho - s;
        double g, slope;
        if (upper) {
            pow_terms terms = pow_boundary_terms(x0, y0, other, s, alpha);
            g = -terms.f;
            slope = terms.n * s / other;  // -dg/dln(s)
        } else {
            pow_terms terms = pow_boundary_terms(x0, y0, s, other, alpha);
            g = terms.f;
            slope = terms.n;
        }
        if (g == 0.0) break;
        if (g > 0.0) {
            lo = s;
        } else {
            hi = s;
            if (s <= floor_s) {  // the root underflows: take the limit s -> 0
                s = 0.0;
                break;
            }
        }
        double u = g / slope;
        // The more cautious of the Newton steps in s and in ln(s).
        double s_new = dq_max(u > 0.0 ? s * (1.0 + u) : s * exp(u), floor_s);
        if (fabs(u) <= DQ_POW_NEWTON_TOL) {
            s = s_new;
            break;
        }
        if (!(lo < s_new && s_new < hi)) s_new = lo > 0.0 ? sqrt(lo) * sqrt(hi) : floor_s;
        s = s_new;
        if (hi - lo <= 4e-16 * hi) break;
    }
    if (upper) {
        *r_out = rho - s;
        *d_out = s;
    } else {
        *r_out = s;
        *d_out = rho - s;
    }
}

__device__ bool pow_in_cone(double x0, double y0, double rho, double alpha) {
    return x0 >= 0.0 && y0 >= 0.0 && pow(x0, alpha) * pow(y0, 1.0 - alpha) >= rho;
}

__device__ bool pow_in_polar(double x0, double y0, double rho, double alpha) {
    double beta = 1.0 - alpha;
    return x0 <= 0.0 && y0 <= 0.0 &&
           pow(-x0, alpha) * pow(-y0, beta) >= rho * pow(alpha, alpha) * pow(beta, beta);
}

#define DQ_POW_IN_CONE 0
#define DQ_POW_IN_POLAR 1
#define DQ_POW_ON_PLANE 2  // outside K and its polar, |z0| negligible after scaling
#define DQ_POW_BOUNDARY 3  // the projection lies on the boundary, |z| > 0

// Cone c's point (x0, y0, z0) and parameter a; for a boundary case also the point
// scaled to unit max-norm and the root (r, d) of f.
struct pow_point {
    double x0, y0, z0, a, xs, ys, scale, r, d;
};

// The region of cone c (point v[3c:3c+3], parameter alpha[c]) into p, with the scaled
// point and the root for a boundary case (_project_one / _jacobian_one's common part).
__device__ int pow_locate(const double* v, const double* alpha, long long c, pow_point* p) {
    double x0 = p->x0 = v[3 * c], y0 = p->y0 = v[3 * c + 1], z0 = p->z0 = v[3 * c + 2];
    double a = p->a = alpha[c];
    double rho = fabs(z0);
    if (pow_in_cone(x0, y0, rho, a)) return DQ_POW_IN_CONE;
    if (pow_in_polar(x0, y0, rho, a)) return DQ_POW_IN_POLAR;
    p->scale = dq_max(dq_max(fabs(x0), fabs(y0)), rho);
    double rho_s = rho / p->scale;
    if (rho_s == 0.0) return DQ_POW_ON_PLANE;
    p->xs = x0 / p->scale;
    p->ys = y0 / p->scale;
    pow_solve_boundary(p->xs, p->ys, rho_s, a, &p->r, &p->d);
    return DQ_POW_BOUNDARY;
}

// Projection onto a product of power cones: cone c is v[3c:3c+3] with parameter alpha[c].
extern "C" __global__ void project_power(const double* __restrict__ v,
                                         const double* __restrict__ alpha, long long ncones,
                                         double* __restrict__ out) {
    GRID_STRIDE(c, ncones) {
        pow_point p;
        int region = pow_locate(v, alpha, c, &p);
        double* o = out + 3 * c;
        if (region == DQ_POW_IN_CONE) {
            o[0] = p.x0;
            o[1] = p.y0;
            o[2] = p.z0;
        } else if (region == DQ_POW_IN_POLAR) {
            o[0] = o[1] = o[2] = 0.0;
        } else if (region == DQ_POW_ON_PLANE) {
            o[0] = dq_max(p.x0, 0.0);
            o[1] = dq_max(p.y0, 0.0);
            o[2] = 0.0;
        } else {
            double lam = p.r * p.d;
            o[0] = pow_root_xi(p.xs, lam, p.a) * p.scale;
            o[1] = pow_root_xi(p.ys, lam, 1.0 - p.a) * p.scale;
            o[2] = copysign(p.r * p.scale, p.z0);
        }
    }
}

// Jacobians of the projection: jac holds ncones row-major 3x3 blocks.
extern "C" __global__ void jacobian_power(const double* __restrict__ v,
                                          const double* __restrict__ alpha, long long ncones,
                                          double* __restrict__ jac) {
    GRID_STRIDE(c, ncones) {
        pow_point p;
        int region = pow_locate(v, alpha, c, &p);
        double x0 = p.x0, y0 = p.y0, z0 = p.z0, a = p.a;
        double* o = jac + 9 * c;
        for (int i = 0; i < 9; ++i) o[i] = 0.0;
        if (region == DQ_POW_IN_CONE) {
            o[0] = o[4] = o[8] = 1.0;
            continue;
        }
        if (region == DQ_POW_IN_POLAR) continue;
        o[0] = x0 > 0.0 ? 1.0 : 0.0;
        o[4] = y0 > 0.0 ? 1.0 : 0.0;
        if (region == DQ_POW_ON_PLANE) {
            o[8] = pow_limit_gain(x0, y0, a);
            continue;
        }
        double r = p.r, d = p.d;
        if (r * d < DQ_POW_TINY) {  // underflow: the limit r d -> 0
            o[8] = r / (r + d);
            continue;
        }
        pow_terms t = pow_boundary_terms(p.xs, p.ys, r, d, a);
        double cc = (r - d) * r / t.n;
        double ux = t.x / t.p;
        double uy = t.y / t.q;
        double sign = z0 > 0.0 ? 1.0 : -1.0;
        o[0] = t.x * t.x / (a * t.p) - cc * ux * ux;
        o[4] = t.y * t.y / ((1.0 - a) * t.q) - cc * uy * uy;
        o[8] = r * r * (a / t.p + (1.0 - a) / t.q) / t.n;
        o[1] = o[3] = -cc * ux * uy;
        o[2] = o[6] = sign * r * ux / t.n;
        o[5] = o[7] = sign * r * uy / t.n;
    }
}
