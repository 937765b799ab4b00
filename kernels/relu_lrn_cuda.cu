// CUDA kernels for fused ReLU+LRN: one thread per (image, pixel, channel chunk), walking down
// the channels with the math of relu_lrn.h. Neighbouring threads own neighbouring pixels, so
// every load and store of a warp is one contiguous run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "relu_lrn_cuda.h"

namespace twocol {

template <>
struct Convert<__half, float> {
  static TWOCOL_HD float load(__half v) { return __half2float(v); }
  static TWOCOL_HD __half store(float v) { return __float2half_rn(v); }
};

template <>
struct Convert<__nv_bfloat16, float> {
  static TWOCOL_HD float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  static TWOCOL_HD __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

namespace {

constexpr int kThreads = 256;
// Each channel chunk re-reads a halo of 2h (forward) or 4h + 2 (backward) channels; below
// this many channels per chunk the halo traffic outweighs the extra parallelism.
constexpr int64_t kMinChunk = 32;

struct Launch {
  dim3 grid;
  int64_t chunk;
};

cudaError_t plan(const ColumnShape& s, Launch* launch) {
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  const int64_t columns = s.batch * s.pixels;
  // Split the channels only when the columns alone would not give every SM (up to 2048
  // resident threads each) two full waves.
  const int64_t wanted = int64_t(sms) * 2048 * 2;
  const int64_t max_chunks = s.channels / kMinChunk > 1 ? s.channels / kMinChunk : 1;
  int64_t chunks = (wanted + columns - 1) / columns;
  chunks = chunks < max_chunks ? chunks : max_chunks;
  launch->chunk = (s.channels + chunks - 1) / chunks;
  chunks = (s.channels + launch->chunk - 1) / launch->chunk;
  launch->grid = dim3(static_cast<unsigned>((columns + kThreads - 1) / kThreads),
                      static_cast<unsigned>(chunks));
  return cudaSuccess;
}

struct ThreadColumn {
  int64_t offset, c_begin, c_end;
  bool active;
};

__device__ __forceinline__ ThreadColumn thread_column(const ColumnShape& s, int64_t chunk) {
  const int64_t column = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t c_begin = int64_t(blockIdx.y) * chunk;
  const int64_t c_end = c_begin + chunk < s.channels ? c_begin + chunk : s.channels;
  return ThreadColumn{(column / s.pixels) * s.channels * s.pixels + column % s.pixels, c_begin,
                      c_end, column < s.batch * s.pixels};
}

template <typename T, typename A, typename Pow>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, T* __restrict__ inv,
                   ColumnShape s, int64_t chunk, LrnParams<A> p, Pow pow_neg_beta) {
  const ThreadColumn t = thread_column(s, chunk);
  if (!t.active) return;
  A win;
  relu_lrn_forward_columns<A>(x + t.offset, y + t.offset, inv + t.offset, &win, 1, s.pixels,
                              s.channels, t.c_begin, t.c_end, p, pow_neg_beta);
}

template <typename T, typename A>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ inv,
                    T* __restrict__ dx, ColumnShape s, int64_t chunk, LrnParams<A> p) {
  const ThreadColumn t = thread_column(s, chunk);
  if (!t.active) return;
  A win[3];
  relu_lrn_backward_columns<A>(g + t.offset, x + t.offset, inv + t.offset, dx + t.offset, win, 1,
                               s.pixels, s.channels, t.c_begin, t.c_end, p);
}

template <typename T, typename A>
cudaError_t forward_typed(const void* x, void* y, void* inv, const ColumnShape& s,
                          const LrnArgs& args, cudaStream_t stream) {
  Launch launch;
  if (cudaError_t err = plan(s, &launch); err != cudaSuccess) return err;
  with_pow<A>(args.beta, [&](auto pow_neg_beta) {
    forward_kernel<T, A><<<launch.grid, kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), static_cast<T*>(inv), s, launch.chunk,
        lrn_params<A>(args), pow_neg_beta);
  });
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t backward_typed(const void* g, const void* x, const void* inv, void* dx,
                           const ColumnShape& s, const LrnArgs& args, cudaStream_t stream) {
  Launch launch;
  if (cudaError_t err = plan(s, &launch); err != cudaSuccess) return err;
  backward_kernel<T, A><<<launch.grid, kThreads, 0, stream>>>(
      static_cast<const T*>(g), static_cast<const T*>(x), static_cast<const T*>(inv),
      static_cast<T*>(dx), s, launch.chunk, lrn_params<A>(args));
  return cudaGetLastError();
}

bool empty(const ColumnShape& s) { return s.batch == 0 || s.channels == 0 || s.pixels == 0; }

}  // namespace

cudaError_t relu_lrn_forward_cuda(CudaDtype dtype, const void* x, void* y, void* inv,
                                  ColumnShape shape, const LrnArgs& args, cudaStream_t stream) {
  if (empty(shape)) return cudaSuccess;
  switch (dtype) {
    case CudaDtype::kFloat: return forward_typed<float, float>(x, y, inv, shape, args, stream);
    case CudaDtype::kDouble: return forward_typed<double, double>(x, y, inv, shape, args, stream);
    case CudaDtype::kHalf: return forward_typed<__half, float>(x, y, inv, shape, args, stream);
    case CudaDtype::kBFloat16:
      return forward_typed<__nv_bfloat16, float>(x, y, inv, shape, args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t relu_lrn_backward_cuda(CudaDtype dtype, const void* grad, const void* x,
                                   const void* inv, void* grad_input, ColumnShape shape,
                                   const LrnArgs& args, cudaStream_t stream) {
  if (empty(shape)) return cudaSuccess;
  switch (dtype) {
    case CudaDtype::kFloat:
      return backward_typed<float, float>(grad, x, inv, grad_input, shape, args, stream);
    case CudaDtype::kDouble:
      return backward_typed<double, double>(grad, x, inv, grad_input, shape, args, stream);
    case CudaDtype::kHalf:
      return backward_typed<__half, float>(grad, x, inv, grad_input, shape, args, stream);
    case CudaDtype::kBFloat16:
      return backward_typed<__nv_bfloat16, float>(grad, x, inv, grad_input, shape, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace twocol
