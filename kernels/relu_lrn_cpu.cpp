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

// The lane loops are compiled once per ISA level and picked at load time by the CPU's
// features (GCC/Clang function multiversioning), so one build vectorises with AVX2 or
// AVX-512 where the CPU has them and still runs on any x86-64.
#if defined(__x86_64__) && defined(__linux__)
#define TWOCOL_ISA_CLONES \
  __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define TWOCOL_ISA_CLONES
#endif

namespace twocol {
namespace {

// Pixels per run. A backward step touches 3h + 4 scratch rows and about 2h + 4 rows of x, g and
// dx: for the paper's n = 5, 18 rows of 2 KiB, well inside L2. (Runs of 128 to 4096 pixels
// timed within the noise of each other on the 2-core development machine.)
constexpr int64_t kLanes = 512;
constexpr int64_t kMinElementsPerTask = 1 << 15;

struct Runs {
  int64_t per_image, count;
};

Runs runs_of(const ColumnShape& s) {
  const int64_t per_image = (s.pixels + kLanes - 1) / kLanes;
  return Runs{per_image, s.batch * per_image};
}

// Calls f(offset, lanes, scratch) for every run, in parallel; scratch holds `scratch_rows`
// rows of kLanes values.
template <typename A, typename F>
void for_each_run(const ColumnShape& s, int64_t scratch_rows, const F& f) {
  const Runs runs = runs_of(s);
  // Small tensors (the CPU-sized nets, tests) stay on one thread: waking the pool costs more.
  const int64_t per_run = s.channels * std::min(kLanes, s.pixels);
  const int64_t grain = std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_run));
  at::parallel_for(0, runs.count, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> scratch(scratch_rows * kLanes);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / runs.per_image, first = (r % runs.per_image) * kLanes;
      f(image * s.channels * s.pixels + first, std::min(kLanes, s.pixels - first),
        scratch.data());
    }
  });
}

template <typename T, typename Pow>
TWOCOL_ISA_CLONES void forward_run(const T* x, T* y, T* win, int64_t lanes, int64_t cstride,
                                   int64_t channels, LrnParams<T> p, Pow pow_neg_beta) {
  relu_lrn_forward_columns<T>(x, y, win, lanes, cstride, channels, 0, channels, p, pow_neg_beta);
}

template <typename T, typename Pow>
TWOCOL_ISA_CLONES void backward_run(const T* g, const T* x, T* dx, T* win, int64_t lanes,
                                    int64_t cstride, int64_t channels, LrnParams<T> p,
                                    Pow pow_neg_beta) {
  relu_lrn_backward_columns<T>(g, x, dx, win, win + 2 * kLanes, kLanes, lanes, cstride, channels,
                               0, channels, p, pow_neg_beta);
}

void forward_into_cpu(const at::Tensor& x, int64_t size, double k, double alpha, double beta,
                      bool relu_first, at::Tensor& out) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_forward(x, out);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "twocol::relu_lrn_forward_into", [&] {
    const auto p = lrn_params<scalar_t>(args);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    with_pow<scalar_t>(args.beta, [&](auto pow_neg_beta) {
      for_each_run<scalar_t>(s, 1, [&](int64_t offset, int64_t lanes, scalar_t* win) {
        forward_run(xp + offset, yp + offset, win, lanes, s.pixels, s.channels, p, pow_neg_beta);
      });
    });
  });
}

void backward_into_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t size, double k,
                       double alpha, double beta, bool relu_first, at::Tensor& grad_input) {
  const LrnArgs args = checked_args(size, k, alpha, beta, relu_first);
  const ColumnShape s = check_backward(grad, x, grad_input);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "twocol::relu_lrn_backward_into", [&] {
    const auto p = lrn_params<scalar_t>(args);
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* dp = grad_input.mutable_data_ptr<scalar_t>();
    with_pow<scalar_t>(args.beta, [&](auto pow_neg_beta) {
      for_each_run<scalar_t>(s, 2 + backward_ring_rows(p.half),
                             [&](int64_t offset, int64_t lanes, scalar_t* win) {
        backward_run(gp + offset, xp + offset, dp + offset, win, lanes, s.pixels, s.channels, p,
                     pow_neg_beta);
      });
    });
  });
}

}  // namespace
}  // namespace twocol

TORCH_LIBRARY_IMPL(twocol, CPU, m) {
  m.impl("relu_lrn_forward_into", &twocol::forward_into_cpu);
  m.impl("relu_lrn_backward_into", &twocol::backward_into_cpu);
}
