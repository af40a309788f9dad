// Qualifiers that let one function body serve the CPU and CUDA kernels.
#pragma once

#define BLENDIN_STRINGIFY_(x) #x
#define BLENDIN_STRINGIFY(x) BLENDIN_STRINGIFY_(x)

#if defined(__CUDACC__)
#define BLENDIN_HD __host__ __device__ __forceinline__
#elif defined(BLENDIN_CPU_VARIANT) && (defined(__GNUC__) || defined(__clang__))
// A CPU kernel variant (csrc/cpu/cpu_variant.h) is compiled with its own ISA
// flags. The ABI tag gives its copies of these inline functions their own
// symbols: otherwise the linker keeps one copy of each for the whole
// library, and an AVX-512 copy could end up called on the portable path.
#define BLENDIN_HD inline __attribute__((abi_tag(BLENDIN_STRINGIFY(BLENDIN_CPU_VARIANT))))
#else
#define BLENDIN_HD inline
#endif
