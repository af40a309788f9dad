// Qualifiers that let one function body serve the CPU and CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define BLENDIN_HD __host__ __device__ __forceinline__
#else
#define BLENDIN_HD inline
#endif
