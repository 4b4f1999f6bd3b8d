// Values of sparse matrices on fixed patterns (the reduced matrix M, the derivative
// system K) gathered from their sources through maps built once per pattern on the
// host, for a batch of problems at once; and the static regularisation of M.

// out[b, k] = sum over the terms t of entry k (term_ptr[k] <= t < term_ptr[k + 1]) of
// weight[t] * src[b, left[t]] * src[b, right[t]], summed in term order from 0.0.
// src holds batch rows of src_stride sources (e.g. P, A, D and E values and a 1.0),
// out batch rows of nnz values. One work item per (problem, entry).
extern "C" __global__ void gather_values(const double* __restrict__ src, long long src_stride,
                                         const long long* __restrict__ term_ptr,
                                         const long long* __restrict__ left,
                                         const long long* __restrict__ right,
                                         const double* __restrict__ weight, long long nnz,
                                         long long batch, double* __restrict__ out) {
    GRID_STRIDE(item, nnz * batch) {
        long long b = item / nnz, k = item - b * nnz;
        const double* row = src + b * src_stride;
        double acc = 0.0;
        for (long long t = term_ptr[k]; t < term_ptr[k + 1]; ++t)
            acc += weight[t] * row[left[t]] * row[right[t]];
        out[item] = acc;
    }
}

// values[b, diagonal[j]] += delta[b] for j < n_positive, -= delta[b] for the others:
// the static regularisation +-delta of the quasi-definite M (diagonal[j] is the position
// of M's j-th diagonal entry among its nnz values).
extern "C" __global__ void shift_diagonal(double* __restrict__ values, long long nnz,
                                          const long long* __restrict__ diagonal,
                                          long long size, long long n_positive,
                                          const double* __restrict__ delta, long long batch) {
    GRID_STRIDE(item, size * batch) {
        long long b = item / size, j = item - b * size;
        double* v = values + b * nnz + diagonal[j];
        *v += j < n_positive ? delta[b] : -delta[b];
    }
}
