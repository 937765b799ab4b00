// CUDA implementations of the twocol:: ops: checks, device and stream, then the launchers of
// relu_lrn_cuda.cu. Built only when torch has CUDA (setup.py).
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "relu_lrn_cuda.h"
#include "relu_lrn_launch.h"
#include "relu_lrn_op.h"

namespace twocol {
namespace {

CudaDtype cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CudaDtype::kFloat;
    case at::kDouble: return CudaDtype::kDouble;
    case at::kHalf: return CudaDtype::kHalf;
    case at::kBFloat16: return CudaDtype::kBFloat16;
    default:
      TORCH_CHECK(false, "twocol relu_lrn on CUDA supports float32, float64, float16 and "
                  "bfloat16, got ", t);
  }
}

// Every argument checked before a kernel sees a pointer: the window too, in the forward pass
// as well, so that a window the backward kernel cannot take fails before training runs.
CudaDtype checked_cuda(const at::Tensor& x, const LrnArgs& args) {
  const CudaDtype dtype = cuda_dtype(x.scalar_type());
  const int64_t accumulator_bytes = x.scalar_type() == at::kDouble ? 8 : 4;
  TORCH_CHECK(cuda_backward_threads(args.size / 2, accumulator_bytes) > 0,
              "twocol relu_lrn on CUDA: size ", args.size, " is wider than the backward "
              "kernel's shared memory allows for ", x.scalar_type(), " (at most ",
              cuda_max_size(accumulator_bytes), ")");
  return dtype;
}

void forward_into_cuda(const at::Tensor& x, int64_t size, double k, double alpha, double beta,
                       bool relu_first, at::Tensor& out) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_forward(x, out);
  const CudaDtype dtype = checked_cuda(x, args);
  const c10::cuda::CUDAGuard guard(x.device());
  C10_CUDA_CHECK(relu_lrn_forward_cuda(dtype, x.const_data_ptr(), out.mutable_data_ptr(), s,
                                       args, c10::cuda::getCurrentCUDAStream()));
}

void backward_into_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t size, double k,
                        double alpha, double beta, bool relu_first, at::Tensor& grad_input) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_backward(grad, x, grad_input);
  const CudaDtype dtype = checked_cuda(x, args);
  const c10::cuda::CUDAGuard guard(x.device());
  C10_CUDA_CHECK(relu_lrn_backward_cuda(dtype, grad.const_data_ptr(), x.const_data_ptr(),
                                        grad_input.mutable_data_ptr(), s, args,
                                        c10::cuda::getCurrentCUDAStream()));
}

}  // namespace
}  // namespace twocol

TORCH_LIBRARY_IMPL(twocol, CUDA, m) {
  m.impl("relu_lrn_forward_into", &twocol::forward_into_cuda);
  m.impl("relu_lrn_backward_into", &twocol::backward_into_cuda);
}
