// The twocol:: torch ops, their argument checks and their autograd.
//
//   twocol::relu_lrn(x, size, k, alpha, beta, relu_first) -> Tensor
//       what twocol.ops calls: differentiable once, any layout in, contiguous NCHW out.
//   twocol::relu_lrn_forward_into(x, ..., out!, inv!)              (CPU and CUDA kernels)
//   twocol::relu_lrn_backward_into(grad, x, inv, ..., grad_input!) (CPU and CUDA kernels)
//       the raw kernels writing into caller buffers; tests poison those buffers, benchmarks
//       time the kernels alone with them.
// alpha is the coefficient of the plain sum of squares (twocol.ops.effective_alpha).
#include <Python.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "relu_lrn_op.h"

namespace twocol {

LrnArgs checked_args(int64_t size, double k, double alpha, double beta, bool relu_first) {
  TORCH_CHECK(size >= 1 && size % 2 == 1, "twocol relu_lrn: size must be odd and positive, got ",
              size);
  // Keeps s >= k > 0, which the kernels' branch-free edge handling relies on (relu_lrn.h).
  TORCH_CHECK(k > 0 && alpha >= 0, "twocol relu_lrn: needs k > 0 and alpha >= 0, got k=", k,
              ", alpha=", alpha);
  return LrnArgs{size, k, alpha, beta, relu_first};
}

namespace {

ColumnShape check_same(const char* op, const at::Tensor& x,
                       std::initializer_list<std::pair<const char*, const at::Tensor*>> others) {
  TORCH_CHECK(x.dim() == 4, op, ": expected an (N, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), op, ": x must be contiguous NCHW (call .contiguous())");
  for (const auto& [name, t] : others) {
    TORCH_CHECK(t->sizes() == x.sizes(), op, ": ", name, " has shape ", t->sizes(),
                ", x has shape ", x.sizes());
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": ", name, " is ", t->scalar_type(),
                ", x is ", x.scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": ", name, " is on ", t->device(), ", x on ",
                x.device());
    TORCH_CHECK(t->is_contiguous(), op, ": ", name, " must be contiguous NCHW");
  }
  return ColumnShape{x.size(0), x.size(1), x.size(2) * x.size(3)};
}

}  // namespace

ColumnShape check_forward(const at::Tensor& x, const at::Tensor& out, const at::Tensor& inv) {
  return check_same("twocol::relu_lrn_forward_into", x, {{"out", &out}, {"inv", &inv}});
}

ColumnShape check_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& inv,
                           const at::Tensor& grad_input) {
  return check_same("twocol::relu_lrn_backward_into", x,
                    {{"grad", &grad}, {"inv", &inv}, {"grad_input", &grad_input}});
}

namespace {

using ForwardInto = void(const at::Tensor&, int64_t, double, double, double, bool, at::Tensor&,
                         at::Tensor&);
using BackwardInto = void(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                          double, double, bool, at::Tensor&);

const c10::TypedOperatorHandle<ForwardInto>& forward_into() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("twocol::relu_lrn_forward_into", "")
                             .typed<ForwardInto>();
  return op;
}

const c10::TypedOperatorHandle<BackwardInto>& backward_into() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("twocol::relu_lrn_backward_into", "")
                             .typed<BackwardInto>();
  return op;
}

struct Forward {
  at::Tensor x, out, inv;  // x made contiguous
};

Forward run_forward(const at::Tensor& x, int64_t size, double k, double alpha, double beta,
                    bool relu_first) {
  Forward f{x.contiguous()};
  f.out = at::empty_like(f.x, at::MemoryFormat::Contiguous);
  f.inv = at::empty_like(f.x, at::MemoryFormat::Contiguous);
  forward_into().call(f.x, size, k, alpha, beta, relu_first, f.out, f.inv);
  return f;
}

class ReluLrnFunction : public torch::autograd::Function<ReluLrnFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t size, double k, double alpha, double beta, bool relu_first) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Forward f = run_forward(x, size, k, alpha, beta, relu_first);
    // x and s^-beta, the one extra tensor kept: backward recomputes s from x.
    ctx->save_for_backward({f.x, f.inv});
    ctx->saved_data["size"] = size;
    ctx->saved_data["k"] = k;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["relu_first"] = relu_first;
    return f.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "twocol::relu_lrn is differentiable once: its backward is not itself "
                "differentiable (create_graph=True / double backward is not supported)");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor grad = grads[0].contiguous();
    at::Tensor grad_input = at::empty_like(x, at::MemoryFormat::Contiguous);
    backward_into().call(grad, x, saved[1], ctx->saved_data["size"].toInt(),
                         ctx->saved_data["k"].toDouble(), ctx->saved_data["alpha"].toDouble(),
                         ctx->saved_data["beta"].toDouble(),
                         ctx->saved_data["relu_first"].toBool(), grad_input);
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor relu_lrn_autograd(const at::Tensor& x, int64_t size, double k, double alpha,
                             double beta, bool relu_first) {
  return ReluLrnFunction::apply(x, size, k, alpha, beta, relu_first);
}

// Below autograd (inference mode, or tensors without autograd keys): no graph, inv dropped.
at::Tensor relu_lrn_no_autograd(const at::Tensor& x, int64_t size, double k, double alpha,
                                double beta, bool relu_first) {
  return run_forward(x, size, k, alpha, beta, relu_first).out;
}

}  // namespace
}  // namespace twocol

TORCH_LIBRARY(twocol, m) {
  m.def("relu_lrn(Tensor x, int size, float k, float alpha, float beta, bool relu_first) -> Tensor");
  m.def(
      "relu_lrn_forward_into(Tensor x, int size, float k, float alpha, float beta, "
      "bool relu_first, Tensor(a!) out, Tensor(b!) inv) -> ()");
  m.def(
      "relu_lrn_backward_into(Tensor grad, Tensor x, Tensor inv, int size, float k, float alpha, "
      "float beta, bool relu_first, Tensor(a!) grad_input) -> ()");
}

TORCH_LIBRARY_IMPL(twocol, Autograd, m) { m.impl("relu_lrn", &twocol::relu_lrn_autograd); }

TORCH_LIBRARY_IMPL(twocol, CompositeExplicitAutograd, m) {
  m.impl("relu_lrn", &twocol::relu_lrn_no_autograd);
}

// Importing twocol._C loads this library, whose static initialisers register the ops above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                               "twocol's fused ReLU+LRN ops, registered as torch.ops.twocol.*",
                               -1, nullptr};
  return PyModule_Create(&module);
}
