// The Float16Bits instantiation of the CUDA BlendIn step (one kernel per
// file, so the three compile in parallel).
#include "blend_step_launch.cuh"

namespace blendin::cuda {

template cudaError_t launch_blend_step<Float16Bits>(const Float16Bits*, const Float16Bits*,
                                                    const StepParams&, KernelVariant, unsigned int*,
                                                    int64_t, void*, size_t, cudaStream_t);
template WorkspaceSize blend_step_workspace<Float16Bits>(const StepParams&, int, KernelVariant);

}  // namespace blendin::cuda
