// Host shim: compiles diffqcp_np's CUDA C kernels with a C++ host compiler, for tests.
//   g++ -std=c++20 -ffp-contract=off -include cuda_host_shim.h host_kernels.cpp
// Serial mode only: every (block, thread) of a launch runs in turn, with blockIdx and
// threadIdx set as on a GPU. Kernels with __syncthreads() abort for blocks of more than
// one thread (no silent wrong answer); the kernels here need no barriers.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

inline void __syncthreads() {
    if (blockDim.x * blockDim.y * blockDim.z > 1) {
        fprintf(stderr, "cuda_host_shim: __syncthreads() with more than one thread per block\n");
        abort();
    }
}

template <class Body>
void dq_launch(unsigned grid, unsigned block, Body&& body) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = dim3{b, 0, 0};
        for (unsigned t = 0; t < block; ++t) {
            threadIdx = dim3{t, 0, 0};
            body();
        }
    }
}

#define DQ_UNPAREN(...) __VA_ARGS__
// launch_<name>(grid, block, kernel parameters...): the kernel run over the launch.
#define DQ_EXPORT(name, PARAMS, ARGS)                                                  \
    extern "C" void launch_##name(unsigned dq_grid, unsigned dq_block,               \
                                  DQ_UNPAREN PARAMS) {                               \
        dq_launch(dq_grid, dq_block, [&] { name ARGS; });                            \
    }
