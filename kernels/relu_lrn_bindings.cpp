// The twocol:: torch ops, their argument checks and their autograd.
//
//   twocol::relu_lrn(x, size, k, alpha, beta, relu_first) -> Tensor
//       what twocol.ops calls: differentiable once, any layout in, contiguous NCHW out.
//   twocol::relu_lrn_backward(grad, x, size, k, alpha, beta, relu_first) -> Tensor
//       its gradient with respect to x, as a functional op: what relu_lrn's autograd calls, so
//       that a traced graph (torch.compile) holds two functional ops and no mutation.
//   twocol::relu_lrn_forward_into(x, ..., out!)                (CPU and CUDA kernels)
//   twocol::relu_lrn_backward_into(grad, x, ..., grad_input!)  (CPU and CUDA kernels)
//       the raw kernels writing into caller buffers; tests poison those buffers, benchmarks
//       time the kernels alone with them.
// alpha is the coefficient of the plain sum of squares (twocol.ops.effective_alpha). The fake
// (meta) kernels that let all four trace under torch.compile live in twocol/ops.py.
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

struct Named {
  const char* name;
  const at::Tensor& t;
};

// Every tensor argument checked before any kernel touches one: defined, then x's shape and
// layout, then each other tensor against x. Reads metadata only; the CPU and CUDA ops both
// call it before they take a pointer, and a failure is a c10::Error, which torch raises as a
// RuntimeError. (On the GPU machine, torch 2.11+cu130, the first bad-argument case of
// test_raw_kernels_reject_bad_arguments_clearly killed the process with SIGSEGV; the same
// wheel and build on the CPU, Python 3.11 and 3.12, raise cleanly: the cause is not known.)
ColumnShape check_same(const char* op, const at::Tensor& x, std::initializer_list<Named> others) {
  TORCH_CHECK(x.defined(), op, ": x is an undefined tensor");
  for (const Named& o : others) TORCH_CHECK(o.t.defined(), op, ": ", o.name, " is undefined");
  TORCH_CHECK(x.dim() == 4, op, ": expected an (N, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), op, ": x must be contiguous NCHW (call .contiguous())");
  for (const Named& o : others) {
    TORCH_CHECK(o.t.sizes() == x.sizes(), op, ": ", o.name, " has shape ", o.t.sizes(),
                ", x has shape ", x.sizes());
    TORCH_CHECK(o.t.scalar_type() == x.scalar_type(), op, ": ", o.name, " is ",
                o.t.scalar_type(), ", x is ", x.scalar_type());
    TORCH_CHECK(o.t.device() == x.device(), op, ": ", o.name, " is on ", o.t.device(),
                ", x on ", x.device());
    TORCH_CHECK(o.t.is_contiguous(), op, ": ", o.name, " must be contiguous NCHW");
  }
  return ColumnShape{x.size(0), x.size(1), x.size(2) * x.size(3)};
}

}  // namespace

ColumnShape check_forward(const at::Tensor& x, const at::Tensor& out) {
  return check_same("twocol::relu_lrn_forward_into", x, {{"out", out}});
}

ColumnShape check_backward(const at::Tensor& grad, const at::Tensor& x,
                           const at::Tensor& grad_input) {
  return check_same("twocol::relu_lrn_backward_into", x,
                    {{"grad", grad}, {"grad_input", grad_input}});
}

namespace {

using ForwardInto = void(const at::Tensor&, int64_t, double, double, double, bool, at::Tensor&);
using BackwardInto = void(const at::Tensor&, const at::Tensor&, int64_t, double, double, double,
                          bool, at::Tensor&);
using Forward = at::Tensor(const at::Tensor&, int64_t, double, double, double, bool);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, double, double, double,
                            bool);

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Below autograd: the ops' implementations for every backend with kernels.
at::Tensor forward_functional(const at::Tensor& x, int64_t size, double k, double alpha,
                              double beta, bool relu_first) {
  static const auto op = find_op<ForwardInto>("twocol::relu_lrn_forward_into");
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  op.call(xc, size, k, alpha, beta, relu_first, out);
  return out;
}

at::Tensor backward_functional(const at::Tensor& grad, const at::Tensor& x, int64_t size,
                               double k, double alpha, double beta, bool relu_first) {
  static const auto op = find_op<BackwardInto>("twocol::relu_lrn_backward_into");
  const at::Tensor xc = x.contiguous();
  at::Tensor grad_input = at::empty_like(xc, at::MemoryFormat::Contiguous);
  op.call(grad.contiguous(), xc, size, k, alpha, beta, relu_first, grad_input);
  return grad_input;
}

class ReluLrnFunction : public torch::autograd::Function<ReluLrnFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            int64_t size, double k, double alpha, double beta, bool relu_first) {
    static const auto op = find_op<Forward>("twocol::relu_lrn");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Made contiguous once here, so that the backward pass does not copy it again.
    const at::Tensor xc = x.contiguous();
    ctx->save_for_backward({xc});  // all the backward pass needs: it recomputes s from x
    ctx->saved_data["size"] = size;
    ctx->saved_data["k"] = k;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["relu_first"] = relu_first;
    return op.call(xc, size, k, alpha, beta, relu_first);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static const auto op = find_op<Backward>("twocol::relu_lrn_backward");
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "twocol::relu_lrn is differentiable once: its backward is not itself "
                "differentiable (create_graph=True / double backward is not supported)");
    const auto saved = ctx->get_saved_variables();
    at::Tensor grad_input =
        op.call(grads[0], saved[0], ctx->saved_data["size"].toInt(),
                ctx->saved_data["k"].toDouble(), ctx->saved_data["alpha"].toDouble(),
                ctx->saved_data["beta"].toDouble(), ctx->saved_data["relu_first"].toBool());
    return {grad_input, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor relu_lrn_autograd(const at::Tensor& x, int64_t size, double k, double alpha,
                             double beta, bool relu_first) {
  return ReluLrnFunction::apply(x, size, k, alpha, beta, relu_first);
}

}  // namespace
}  // namespace twocol

TORCH_LIBRARY(twocol, m) {
  m.def("relu_lrn(Tensor x, int size, float k, float alpha, float beta, bool relu_first) -> Tensor");
  m.def(
      "relu_lrn_backward(Tensor grad, Tensor x, int size, float k, float alpha, float beta, "
      "bool relu_first) -> Tensor");
  m.def(
      "relu_lrn_forward_into(Tensor x, int size, float k, float alpha, float beta, "
      "bool relu_first, Tensor(a!) out) -> ()");
  m.def(
      "relu_lrn_backward_into(Tensor grad, Tensor x, int size, float k, float alpha, "
      "float beta, bool relu_first, Tensor(a!) grad_input) -> ()");
}

TORCH_LIBRARY_IMPL(twocol, Autograd, m) { m.impl("relu_lrn", &twocol::relu_lrn_autograd); }

// Below autograd (inference mode, tensors without autograd keys, and relu_lrn's own autograd):
// allocate, then the raw kernels of the input's device.
TORCH_LIBRARY_IMPL(twocol, CompositeExplicitAutograd, m) {
  m.impl("relu_lrn", &twocol::forward_functional);
  m.impl("relu_lrn_backward", &twocol::backward_functional);
}

// Importing twocol._C loads this library, whose static initialisers register the ops above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C",
                               "twocol's fused ReLU+LRN ops, registered as torch.ops.twocol.*",
                               -1, nullptr};
  return PyModule_Create(&module);
}
