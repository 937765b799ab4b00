// CPU kernels for fused ReLU+LRN: the math of relu_lrn.h applied to runs of up to kLanes
// pixels of one image at a time, one run per work item of at::parallel_for.
//
// Walking a run down the channels reads each channel's plane segment contiguously, so the
// lane loops vectorise and the hardware prefetcher streams them; the few planes a window
// spans stay in cache, so each element comes from memory once per pass.
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "relu_lrn_op.h"

namespace twocol {
namespace {

// Pixels per run. The backward pass touches about 4n + 5 planes of a run at once; 1024 floats
// (4 KiB) per plane keeps those in L2 with room to spare.
constexpr int64_t kLanes = 1024;
constexpr int64_t kMinElementsPerTask = 1 << 15;

struct Runs {
  int64_t per_image, count;
};

Runs runs_of(const ColumnShape& s) {
  const int64_t per_image = (s.pixels + kLanes - 1) / kLanes;
  return Runs{per_image, s.batch * per_image};
}

// Calls f(offset, lanes, scratch) for every run, in parallel; scratch holds `scratch_per_lane`
// values per lane.
template <typename A, typename F>
void for_each_run(const ColumnShape& s, int64_t scratch_per_lane, const F& f) {
  const Runs runs = runs_of(s);
  // Small tensors (the CPU-sized nets, tests) stay on one thread: waking the pool costs more.
  const int64_t per_run = s.channels * std::min(kLanes, s.pixels);
  const int64_t grain = std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_run));
  at::parallel_for(0, runs.count, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> scratch(scratch_per_lane * kLanes);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / runs.per_image, first = (r % runs.per_image) * kLanes;
      f(image * s.channels * s.pixels + first, std::min(kLanes, s.pixels - first),
        scratch.data());
    }
  });
}

void forward_into_cpu(const at::Tensor& x, int64_t size, double k, double alpha, double beta,
                      bool relu_first, at::Tensor& out, at::Tensor& inv) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_forward(x, out, inv);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "twocol::relu_lrn_forward_into", [&] {
    const auto p = lrn_params<scalar_t>(args);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    scalar_t* ip = inv.mutable_data_ptr<scalar_t>();
    with_pow<scalar_t>(args.beta, [&](auto pow_neg_beta) {
      for_each_run<scalar_t>(s, 1, [&](int64_t offset, int64_t lanes, scalar_t* win) {
        relu_lrn_forward_columns<scalar_t>(xp + offset, yp + offset, ip + offset, win, lanes,
                                           s.pixels, s.channels, 0, s.channels, p, pow_neg_beta);
      });
    });
  });
}

void backward_into_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& inv,
                       int64_t size, double k, double alpha, double beta, bool relu_first,
                       at::Tensor& grad_input) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_backward(grad, x, inv, grad_input);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "twocol::relu_lrn_backward_into", [&] {
    const auto p = lrn_params<scalar_t>(args);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* ip = inv.const_data_ptr<scalar_t>();
    scalar_t* dp = grad_input.mutable_data_ptr<scalar_t>();
    for_each_run<scalar_t>(s, 3, [&](int64_t offset, int64_t lanes, scalar_t* win) {
      relu_lrn_backward_columns<scalar_t>(gp + offset, xp + offset, ip + offset, dp + offset, win,
                                          lanes, s.pixels, s.channels, 0, s.channels, p);
    });
  });
}

}  // namespace
}  // namespace twocol

TORCH_LIBRARY_IMPL(twocol, CPU, m) {
  m.impl("relu_lrn_forward_into", &twocol::forward_into_cpu);
  m.impl("relu_lrn_backward_into", &twocol::backward_into_cpu);
}
