// Launchers for the CUDA kernels. Plain pointers and a stream, no torch types: the .cu that
// defines them compiles with nvcc alone, and the torch glue (relu_lrn_cuda_op.cpp) with g++.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "relu_lrn.h"

namespace twocol {

enum class CudaDtype { kFloat, kDouble, kHalf, kBFloat16 };

cudaError_t relu_lrn_forward_cuda(CudaDtype dtype, const void* x, void* y, ColumnShape shape,
                                  const LrnArgs& args, cudaStream_t stream);

// args.size must fit the backward kernel's shared memory (cuda_backward_threads > 0).
cudaError_t relu_lrn_backward_cuda(CudaDtype dtype, const void* grad, const void* x,
                                   void* grad_input, ColumnShape shape, const LrnArgs& args,
                                   cudaStream_t stream);

}  // namespace twocol
