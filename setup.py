"""Builds blendin_ext._C: the CPU kernel always, the CUDA kernel when usable.

Environment switches:
  BLENDIN_CUDA=auto|1|0   auto (default): CUDA sources join the build when
                          torch was built with CUDA and nvcc is found; 1 forces
                          them (and fails loudly if impossible); 0 leaves them out.
  BLENDIN_CPU_ARCH=native  value of -march for the CPU kernel ("" to omit);
                          native suits a source build used on the same machine.
  BLENDIN_CUDA_ARCHS="80;90"  compute capabilities for the CUDA kernel.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def cxx_flags() -> list:
    # -fopenmp: at::parallel_for is an inline OpenMP loop in torch's headers;
    # without the flag it silently runs on one thread.
    flags = ["-O3", "-std=c++17", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    arch = os.environ.get("BLENDIN_CPU_ARCH", "native")
    if arch:
        flags.append(f"-march={arch}")
    return flags


def nvcc_flags() -> list:
    archs = os.environ.get("BLENDIN_CUDA_ARCHS", "80;90").split(";")
    flags = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
    for arch in archs:
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def extension():
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    sources = sorted(glob.glob("csrc/cpu/*.cpp")) + [
        "csrc/torch/step_args.cpp",
        "csrc/torch/blend_step_cpu_op.cpp",
        "csrc/torch/torch_bindings.cpp",
    ]
    if cuda_wanted():
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + ["csrc/torch/blend_step_cuda_op.cpp"]
        return cpp_extension.CUDAExtension(
            "blendin_ext._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags() + ["-DBLENDIN_WITH_CUDA"], "nvcc": nvcc_flags()},
            extra_link_args=["-fopenmp"],
        )
    return cpp_extension.CppExtension(
        "blendin_ext._C", sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx_flags()},
        extra_link_args=["-fopenmp"],
    )


setup(
    packages=find_packages(include=["blendin_ext", "blendin_ext.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
