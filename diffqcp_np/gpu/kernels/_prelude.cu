// Definitions shared by the kernel files; prepended to each of them when it is compiled
// (NVRTC through CuPy, or the host compiler through the test suite's shim).
// Plain CUDA C: no #include, so NVRTC needs no headers.

// One work item i per iteration, for any launch geometry (grid-stride loop).
#define GRID_STRIDE(i, n)                                                              \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);     \
         i += (long long)blockDim.x * gridDim.x)

// Numba's max(a, b) and min(a, b): b if it compares greater (smaller), else a.
// (fmax/fmin differ on signed zeros.)
__device__ __forceinline__ double dq_max(double a, double b) { return b > a ? b : a; }
__device__ __forceinline__ double dq_min(double a, double b) { return b < a ? b : a; }

// diffqcp_np.cones.reduced.NULL_EIGENVALUE: eigenvalues of a cone Jacobian below it
// count as null.
#define DQ_NULL_EIGENVALUE 1e-06

// Eigenvalue of E = D(I - D) + Pi_0 for an eigenvalue lam of D.
__device__ __forceinline__ double dq_e_weight(double lam) {
    return lam < DQ_NULL_EIGENVALUE ? 1.0 : lam * (1.0 - lam);
}

// Eigenvalue of the null projector Pi_0 for an eigenvalue lam of D.
__device__ __forceinline__ double dq_null_weight(double lam) {
    return lam < DQ_NULL_EIGENVALUE ? 1.0 : 0.0;
}
