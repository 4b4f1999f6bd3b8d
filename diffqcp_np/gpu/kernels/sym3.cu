// Symmetric 3x3 blocks (Jacobians of exponential and power cones): cyclic Jacobi
// eigen-decompositions, and E = D(I - D) + Pi_0 and Pi_0 from them; the eigenvalue
// weights of E and Pi_0 for any list of eigenvalues. The GPU twin of
// diffqcp_np/cones/_sym3_eigen_numba.py and of _small_block_parts / _e_weights / _null_weights
// in diffqcp_np/cones/reduced.py, operation for operation.

#define DQ_SYM3_MAX_SWEEPS 30

// Diagonalise the symmetric row-major 3x3 A in place by cyclic Jacobi rotations,
// accumulating them into V (row-major): afterwards A_in = V diag(A) V'.
__device__ void sym3_jacobi(double* A, double* V) {
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) V[3 * i + j] = i == j ? 1.0 : 0.0;
    double scale = 0.0;  // max |A_ij| (not a sum of squares, which overflows from 1e154)
    for (int i = 0; i < 9; ++i) scale = dq_max(scale, fabs(A[i]));
    for (int sweep = 0; sweep < DQ_SYM3_MAX_SWEEPS; ++sweep) {
        double off = dq_max(dq_max(fabs(A[1]), fabs(A[2])), fabs(A[5]));
        if (off <= 1e-18 * scale) return;  // also for the zero matrix
        for (int p = 0; p < 2; ++p) {
            for (int q = p + 1; q < 3; ++q) {
                double apq = A[3 * p + q];
                if (apq == 0.0) continue;
                double theta = (A[3 * q + q] - A[3 * p + p]) / (2.0 * apq);
                double t;
                if (fabs(theta) > 1e150) {  // theta^2 would overflow: t = 1/(2 theta)
                    t = 0.5 / theta;
                } else {
                    t = 1.0 / (fabs(theta) + sqrt(theta * theta + 1.0));
                    if (theta < 0.0) t = -t;
                }
                double c = 1.0 / sqrt(t * t + 1.0);
                double s = t * c;
                for (int k = 0; k < 3; ++k) {  // A <- A J
                    double akp = A[3 * k + p], akq = A[3 * k + q];
                    A[3 * k + p] = c * akp - s * akq;
                    A[3 * k + q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; ++k) {  // A <- J' A
                    double apk = A[3 * p + k], aqk = A[3 * q + k];
                    A[3 * p + k] = c * apk - s * aqk;
                    A[3 * q + k] = s * apk + c * aqk;
                }
                A[3 * p + q] = A[3 * q + p] = 0.0;
                for (int k = 0; k < 3; ++k) {  // V <- V J
                    double vkp = V[3 * k + p], vkq = V[3 * k + q];
                    V[3 * k + p] = c * vkp - s * vkq;
                    V[3 * k + q] = s * vkp + c * vkq;
                }
            }
        }
    }
}

// Block b's upper triangle (row-major blocks + 9 b) as a full symmetric matrix.
__device__ void sym3_load(const double* blocks, long long b, double* A) {
    const double* in = blocks + 9 * b;
    for (int i = 0; i < 3; ++i)
        for (int j = i; j < 3; ++j) A[3 * i + j] = A[3 * j + i] = in[3 * i + j];
}

// Eigenvalues (nblocks x 3, unsorted) and eigenvectors (nblocks row-major 3x3 blocks,
// eigenvectors as columns) of the symmetric blocks (upper triangles read).
extern "C" __global__ void sym3_eigh(const double* __restrict__ blocks, long long nblocks,
                                     double* __restrict__ lam, double* __restrict__ vectors) {
    GRID_STRIDE(b, nblocks) {
        double A[9];
        sym3_load(blocks, b, A);
        double* V = vectors + 9 * b;
        sym3_jacobi(A, V);
        for (int i = 0; i < 3; ++i) lam[3 * b + i] = A[4 * i];
    }
}

// E = D(I - D) + Pi_0 and Pi_0 of each symmetric block D, from its eigen-decomposition.
extern "C" __global__ void sym3_reduced_parts(const double* __restrict__ blocks,
                                              long long nblocks, double* __restrict__ e,
                                              double* __restrict__ null) {
    GRID_STRIDE(b, nblocks) {
        double A[9], V[9];
        sym3_load(blocks, b, A);
        sym3_jacobi(A, V);
        double* E = e + 9 * b;
        double* N = null + 9 * b;
        for (int i = 0; i < 9; ++i) E[i] = N[i] = 0.0;
        for (int t = 0; t < 3; ++t) {
            double e_w = dq_e_weight(A[4 * t]), null_w = dq_null_weight(A[4 * t]);
            for (int i = 0; i < 3; ++i) {
                double vi = V[3 * i + t];
                for (int j = 0; j < 3; ++j) {
                    double product = vi * V[3 * j + t];
                    E[3 * i + j] += e_w * product;
                    N[3 * i + j] += null_w * product;
                }
            }
        }
    }
}

// The eigenvalues of E and Pi_0 for eigenvalues lam of D (diagonal parts, PSD blocks).
extern "C" __global__ void eigen_weights(const double* __restrict__ lam, long long n,
                                         double* __restrict__ e, double* __restrict__ null) {
    GRID_STRIDE(i, n) {
        e[i] = dq_e_weight(lam[i]);
        null[i] = dq_null_weight(lam[i]);
    }
}
