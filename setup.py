"""Builds blendin_ext._C: the CPU kernel always, the CUDA kernel when usable.

Environment switches:
  BLENDIN_CUDA=auto|1|0   auto (default): CUDA sources join the build when
                          torch was built with CUDA and nvcc is found; 1 forces
                          them (and fails loudly if impossible); 0 leaves them out.
  BLENDIN_CPU_ARCH=portable  the CPU kernel's variants (csrc/cpu/cpu_variant.h; their
                          flags in csrc/cpu/variant_flags.txt, which CMakeLists.txt
                          reads too):
                          portable (default): on x86-64 compiled three times,
                            generic (default flags), avx2 (the x86-64-v3
                            level: AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE) and
                            avx512 (x86-64-v4: + AVX-512 F/BW/CD/DQ/VL); the
                            best the CPU runs is picked at the first step;
                            elsewhere generic only. A wheel built so runs on
                            any CPU of its platform.
                          native: one variant, -march=native, for a build used
                            on the machine that compiled it (as before).
                          generic or "": one variant, default flags.
                          any other value: one variant with that -march.
  BLENDIN_CUDA_ARCHS="80;90"  compute capabilities for the CUDA kernel
                          (default in csrc/cuda/default_archs.txt, which
                          CMakeLists.txt reads too).

At run time BLENDIN_CPU_VARIANT=<name> (read once per process) forces one of
the built variants, for tests and benchmarks; a variant the CPU cannot run is
an error. torch.ops.blendin_ext.cpu_variant() names the active one and
cpu_variants() lists those this CPU can run.
"""

import glob
import os
import platform

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
CPU_KERNEL = "csrc/cpu/blend_step_cpu.cpp"  # compiled once per variant
# The bfloat16 linear layer's AVX-512 BF16 kernel (csrc/cpu/bf16_linear.h):
# compiled with its own flags on x86-64, called only on CPUs that have them.
LINEAR_KERNEL = "csrc/cpu/bf16_linear_avx512_bf16.cpp"
# The CPU kernels' flags, shared with CMakeLists.txt (why each: in the file).
CPU_FLAGS_FILE = "csrc/cpu/variant_flags.txt"


def cpu_flags() -> dict:
    """CPU_FLAGS_FILE as {name: [flags]}."""
    flags = {}
    with open(os.path.join(ROOT, CPU_FLAGS_FILE)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, value = line.partition(":")
                flags[name.strip()] = value.split()
    return flags


def cuda_wanted() -> bool:
    mode = os.environ.get("BLENDIN_CUDA", "auto").lower()
    usable = cpp_extension.CUDA_HOME is not None and _torch_has_cuda()
    if mode in ("1", "on", "true"):
        if not usable:
            raise RuntimeError("BLENDIN_CUDA=1 but torch has no CUDA or nvcc was not found")
        return True
    if mode in ("0", "off", "false"):
        return False
    return usable


def _torch_has_cuda() -> bool:
    import torch

    return torch.version.cuda is not None


def cpu_variants():
    """(variant name, its extra flags) to build, generic first, and the
    define that tells the dispatcher (blend_step_dispatch.cpp) which exist."""
    arch = os.environ.get("BLENDIN_CPU_ARCH", "portable")
    if arch == "portable":
        if is_x86_64():
            flags = cpu_flags()
            variants = [("generic", []), ("avx2", flags["avx2"]), ("avx512", flags["avx512"])]
            return variants, "-DBLENDIN_CPU_X86_VARIANTS"
        return [("generic", [])], None
    if arch in ("", "generic"):
        return [("generic", [])], "-DBLENDIN_CPU_SINGLE=generic"
    name = "native" if arch == "native" else "custom"
    return [(name, [f"-march={arch}"])], f"-DBLENDIN_CPU_SINGLE={name}"


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def cxx_flags() -> list:
    # -fopenmp: at::parallel_for is an inline OpenMP loop in torch's headers;
    # without the flag it silently runs on one thread. -std=c++20: torch's
    # own standard (its headers warn under C++17 since torch 2.10).
    return [
        "-O3",
        "-std=c++20",
        "-fopenmp",
        *cpu_flags()["all"],
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
    ]


def default_cuda_archs() -> str:
    with open(os.path.join(ROOT, "csrc", "cuda", "default_archs.txt")) as f:
        return f.read().strip()


def nvcc_flags() -> list:
    archs = os.environ.get("BLENDIN_CUDA_ARCHS", default_cuda_archs()).split(";")
    flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
    for arch in archs:
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, plus the CPU kernel compiled once per variant
    with that variant's flags (setuptools has no per-file flags), and the
    linear layer's AVX-512 BF16 kernel with its own. The
    variant objects are linked after the extension's own, generic first, as
    a backstop: ctest rules out symbols shared between variants, but should
    one slip in, the linker keeps its first, least demanding, definition."""

    def build_extension(self, ext):
        ext.extra_objects = self._cpu_variant_objects(ext) + list(ext.extra_objects or [])
        super().build_extension(ext)

    def _cpu_variant_objects(self, ext) -> list:
        # By now torch has added its defines (ABI, extension name) to the
        # extension's flags; the variants get the same ones.
        base = (
            ext.extra_compile_args["cxx"]
            if isinstance(ext.extra_compile_args, dict)
            else ext.extra_compile_args
        )
        flags_of = cpu_flags()
        objects = []
        if is_x86_64():
            objects += self.compiler.compile(
                [LINEAR_KERNEL],
                output_dir=os.path.join(self.build_temp, "linear_avx512_bf16"),
                include_dirs=ext.include_dirs,
                depends=ext.depends,
                extra_postargs=list(base) + flags_of["bf16_linear"],
            )
        for name, flags in cpu_variants()[0]:
            objects += self.compiler.compile(
                [CPU_KERNEL],
                output_dir=os.path.join(self.build_temp, f"cpu_{name}"),  # its own build.ninja
                include_dirs=ext.include_dirs,
                extra_postargs=list(base)
                + flags_of["kernel"]
                + flags
                + [f"-DBLENDIN_CPU_VARIANT={name}"],
                depends=ext.depends,
            )
        return objects


def extension():
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    sources = [
        "csrc/cpu/blend_step_dispatch.cpp",
        "csrc/cpu/bf16_linear.cpp",
        "csrc/torch/step_args.cpp",
        "csrc/torch/blend_step_cpu_op.cpp",
        "csrc/torch/bf16_linear_op.cpp",
        "csrc/torch/kernel_variant_op.cpp",
        "csrc/torch/torch_bindings.cpp",
    ]
    dispatch_define = cpu_variants()[1]
    cxx = (
        cxx_flags()
        + ([dispatch_define] if dispatch_define else [])
        + (["-DBLENDIN_BF16_LINEAR_AVX512"] if is_x86_64() else [])
    )
    # Headers as depends, so that editing one rebuilds the extension.
    depends = sorted(glob.glob("csrc/cpu/*.h") + glob.glob("csrc/include/blendin/*.h")) + [
        CPU_FLAGS_FILE,
        "csrc/cuda/kernel_variant.h",
    ]
    if cuda_wanted():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + ["csrc/torch/blend_step_cuda_op.cpp"]
        depends += sorted(glob.glob("csrc/cuda/*.cuh") + glob.glob("csrc/cuda/*.h"))
        return cpp_extension.CUDAExtension(
            "blendin_ext._C",
            sources,
            include_dirs=include_dirs,
            depends=depends,
            extra_compile_args={"cxx": cxx, "nvcc": nvcc_flags()},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "blendin_ext._C",
        sources,
        include_dirs=include_dirs,
        depends=depends,
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )


setup(
    # blendin_ext/eval/data holds data files only (package-data in pyproject.toml).
    packages=find_packages(include=["blendin_ext", "blendin_ext.*"]) + ["blendin_ext.eval.data"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
