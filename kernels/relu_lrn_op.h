// Argument checks shared by the CPU and CUDA implementations of the twocol:: ops
// (defined in relu_lrn_bindings.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "relu_lrn.h"

namespace twocol {

LrnArgs checked_args(int64_t size, double k, double alpha, double beta, bool relu_first);

// The raw ops write into caller-provided buffers: all contiguous NCHW, same shape, dtype and
// device. The autograd op makes its inputs contiguous before calling them.
ColumnShape check_forward(const at::Tensor& x, const at::Tensor& out);
ColumnShape check_backward(const at::Tensor& grad, const at::Tensor& x,
                           const at::Tensor& grad_input);

}  // namespace twocol
