// blendin::cpu::blend_step on top of the CPU variants (cpu_variant.h): the
// variant is chosen once per process, from the CPU's features or from
// BLENDIN_CPU_VARIANT. Compiled with the default flags, like the glue, so
// it runs on any CPU the generic variant runs on.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "blend_step_cpu.h"
#include "cpu_variant.h"  // declares the generic variant

// Which variants this build compiled, as setup.py and CMakeLists.txt define:
//   BLENDIN_CPU_SINGLE=<name>  just that one (BLENDIN_CPU_ARCH other than
//                              portable: native, generic or custom);
//   BLENDIN_CPU_X86_VARIANTS   avx512, avx2 and generic (portable, x86-64);
//   neither                    generic alone (portable, other machines).
#if defined(BLENDIN_CPU_SINGLE)
BLENDIN_DECLARE_CPU_VARIANT(BLENDIN_CPU_SINGLE)
#elif defined(BLENDIN_CPU_X86_VARIANTS)
BLENDIN_DECLARE_CPU_VARIANT(avx512)
BLENDIN_DECLARE_CPU_VARIANT(avx2)
#endif

namespace blendin::cpu {
namespace {

template <typename T>
using StepFn = void (*)(const T*, const T*, const StepParams&, const ParallelFor&);

struct Variant {
  const char* name;
  const char* needs;  // what the CPU must have, for error messages
  bool (*runnable)();
  StepFn<float> f32;
  StepFn<Float16Bits> f16;
  StepFn<BFloat16Bits> bf16;

  StepFn<float> step(const float*) const { return f32; }
  StepFn<Float16Bits> step(const Float16Bits*) const { return f16; }
  StepFn<BFloat16Bits> step(const BFloat16Bits*) const { return bf16; }
};

#define BLENDIN_CPU_VARIANT_ENTRY(ns, needs, runnable)                        \
  Variant {                                                                   \
    BLENDIN_STRINGIFY(ns), needs, runnable, &ns::blend_step_impl<float>,      \
        &ns::blend_step_impl<Float16Bits>, &ns::blend_step_impl<BFloat16Bits> \
  }

bool any_cpu() { return true; }

#if defined(BLENDIN_CPU_X86_VARIANTS)
// The ISA levels the variants are compiled for (x86-64-v3 / -v4);
// the checks include the OS saving the wider registers (XGETBV). GCC names
// the levels from version 12 on; with other compilers the check lists the
// features they can all name, which leaves out F16C, LZCNT and MOVBE (every
// AVX2 + FMA + BMI2 CPU from Intel and AMD has them).
#if !defined(BLENDIN_CPU_LEVEL_NAMES)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define BLENDIN_CPU_LEVEL_NAMES 1
#else
#define BLENDIN_CPU_LEVEL_NAMES 0
#endif
#endif
bool has_x86_64_v3() {
  __builtin_cpu_init();
#if BLENDIN_CPU_LEVEL_NAMES
  return __builtin_cpu_supports("x86-64-v3");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
#endif
}
bool has_x86_64_v4() {
  __builtin_cpu_init();
#if BLENDIN_CPU_LEVEL_NAMES
  return __builtin_cpu_supports("x86-64-v4");
#else
  return has_x86_64_v3() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
}
#endif

// Best first; the last one runs anywhere this library loads.
const Variant kVariants[] = {
#if defined(BLENDIN_CPU_SINGLE)
    // Built for one -march; whether this CPU has it cannot be asked here.
    BLENDIN_CPU_VARIANT_ENTRY(BLENDIN_CPU_SINGLE, "the CPU it was built for", any_cpu),
#else
#if defined(BLENDIN_CPU_X86_VARIANTS)
    BLENDIN_CPU_VARIANT_ENTRY(avx512, "x86-64-v4: AVX-512 F/BW/CD/DQ/VL", has_x86_64_v4),
    BLENDIN_CPU_VARIANT_ENTRY(avx2, "x86-64-v3: AVX2, FMA, F16C, BMI1/2", has_x86_64_v3),
#endif
    BLENDIN_CPU_VARIANT_ENTRY(generic, "nothing special", any_cpu),
#endif
};

std::string names(bool runnable_only) {
  std::string out;
  for (const Variant& v : kVariants) {
    if (runnable_only && !v.runnable()) continue;
    out += (out.empty() ? "" : ", ") + std::string(v.name);
  }
  return out;
}

// The variant `wanted` names ("" or "auto": the best runnable), or nullptr
// with the reason in `error`.
const Variant* find_variant(const std::string& wanted, std::string& error) {
  for (const Variant& v : kVariants) {
    const bool match = wanted.empty() || wanted == "auto" || wanted == v.name;
    if (match && v.runnable()) return &v;
    if (match && wanted == v.name) {
      error = "CPU variant '" + wanted + "' needs " + v.needs +
              ", which this CPU lacks; it can run: " + names(true);
      return nullptr;
    }
  }
  error = "'" + wanted +
          "' is not a CPU variant of this build of blendin_ext (built: " + names(false) +
          "; or auto)";
  return nullptr;
}

struct Choice {
  const Variant* variant;
  std::string error;
};

// BLENDIN_CPU_VARIANT is read on first use only: every step of a process
// runs the same code.
const Choice& choice() {
  static const Choice chosen = [] {
    const char* env = std::getenv("BLENDIN_CPU_VARIANT");
    Choice c{nullptr, ""};
    c.variant = find_variant(env ? env : "", c.error);
    if (!c.variant) c.error = "BLENDIN_CPU_VARIANT: " + c.error;
    return c;
  }();
  return chosen;
}

const Variant& active() {
  const Choice& c = choice();
  if (!c.variant) throw std::runtime_error(c.error);
  return *c.variant;
}

}  // namespace

std::string active_cpu_variant() { return active().name; }

std::vector<std::string> runnable_cpu_variants() {
  std::vector<std::string> out;
  for (const Variant& v : kVariants) {
    if (v.runnable()) out.push_back(v.name);
  }
  return out;
}

template <typename T>
void blend_step(const T* base_logits, const T* guide_logits, const StepParams& params,
                const ParallelFor& parallel_for) {
  active().step(base_logits)(base_logits, guide_logits, params, parallel_for);
}

template <typename T>
void blend_step_variant(const std::string& variant, const T* base_logits, const T* guide_logits,
                        const StepParams& params, const ParallelFor& parallel_for) {
  std::string error;
  const Variant* v = find_variant(variant, error);
  if (!v) throw std::runtime_error(error);
  v->step(base_logits)(base_logits, guide_logits, params, parallel_for);
}

#define BLENDIN_INSTANTIATE_CPU_STEP(T)                                                          \
  template void blend_step<T>(const T*, const T*, const StepParams&, const ParallelFor&);        \
  template void blend_step_variant<T>(const std::string&, const T*, const T*, const StepParams&, \
                                      const ParallelFor&);
BLENDIN_INSTANTIATE_CPU_STEP(float)
BLENDIN_INSTANTIATE_CPU_STEP(Float16Bits)
BLENDIN_INSTANTIATE_CPU_STEP(BFloat16Bits)

}  // namespace blendin::cpu
