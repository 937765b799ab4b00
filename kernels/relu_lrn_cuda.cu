// CUDA kernels for fused ReLU+LRN: one thread per (image, pixel, channel chunk), walking down
// the channels with the math of relu_lrn.h. Neighbouring threads own neighbouring pixels, so
// every load and store of a warp is one contiguous run. (128-bit vector loads would need every
// channel plane 16-byte aligned, i.e. H * W a multiple of 4 floats or 8 halves; AlexNet's
// 55 x 55 and 27 x 27 planes are not, so each thread loads scalars and keeps several channels'
// loads in flight instead: see TWOCOL_UNROLL_CHANNELS.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "relu_lrn_cuda.h"
#include "relu_lrn_launch.h"

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

struct Launch {
  dim3 grid;
  int threads;
  int64_t chunk;
};

cudaError_t plan(const ColumnShape& s, int threads, Launch* launch) {
  int device = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  launch->chunk = cuda_channel_chunk(s, sms);
  launch->threads = threads;
  launch->grid = dim3(static_cast<unsigned>((s.batch * s.pixels + threads - 1) / threads),
                      static_cast<unsigned>((s.channels + launch->chunk - 1) / launch->chunk));
  return cudaSuccess;
}

// Float accumulators: registers capped so that 8 blocks of 256 threads, the 2048 an SM holds,
// are resident at once (32 per thread; without the cap the backward kernel takes 40, i.e. 75%
// occupancy): memory-bound kernels hide latency with warps. Double kernels would spill.
template <typename A>
constexpr int kMinBlocksPerSm = sizeof(A) == sizeof(float) ? 2048 / kCudaMaxThreads : 1;

struct ThreadColumn {
  int64_t offset, c_begin, c_end;
  bool active;
};

__device__ __forceinline__ ThreadColumn thread_column(const ColumnShape& s, int64_t chunk) {
  const int64_t column = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c_begin = int64_t(blockIdx.y) * chunk;
  const int64_t c_end = c_begin + chunk < s.channels ? c_begin + chunk : s.channels;
  return ThreadColumn{(column / s.pixels) * s.channels * s.pixels + column % s.pixels, c_begin,
                      c_end, column < s.batch * s.pixels};
}

template <typename T, typename A, typename Pow>
__global__ void __launch_bounds__(kCudaMaxThreads, kMinBlocksPerSm<A>)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, ColumnShape s, int64_t chunk,
                   LrnParams<A> p, Pow pow_neg_beta) {
  const ThreadColumn t = thread_column(s, chunk);
  if (!t.active) return;
  A win;
  relu_lrn_forward_columns<A>(x + t.offset, y + t.offset, &win, 1, s.pixels, s.channels,
                              t.c_begin, t.c_end, p, pow_neg_beta);
}

template <typename T, typename A, typename Pow>
__global__ void __launch_bounds__(kCudaMaxThreads, kMinBlocksPerSm<A>)
    backward_kernel(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ dx,
                    ColumnShape s, int64_t chunk, LrnParams<A> p, Pow pow_neg_beta) {
  // The ring rows of all threads, row-major: a thread's values are blockDim.x apart, so a
  // warp's accesses to one row fall in distinct banks. The two running sums stay in registers.
  extern __shared__ __align__(16) unsigned char shared[];
  const ThreadColumn t = thread_column(s, chunk);
  if (!t.active) return;
  A sums[2];
  A* rings = reinterpret_cast<A*>(shared) + threadIdx.x;
  relu_lrn_backward_columns<A>(g + t.offset, x + t.offset, dx + t.offset, sums, rings,
                               blockDim.x, 1, s.pixels, s.channels, t.c_begin, t.c_end, p,
                               pow_neg_beta);
}

template <typename T, typename A>
cudaError_t forward_typed(const void* x, void* y, const ColumnShape& s, const LrnArgs& args,
                          cudaStream_t stream) {
  Launch launch;
  if (cudaError_t err = plan(s, kCudaMaxThreads, &launch); err != cudaSuccess) return err;
  with_pow<A>(args.beta, [&](auto pow_neg_beta) {
    forward_kernel<T, A><<<launch.grid, launch.threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), s, launch.chunk, lrn_params<A>(args),
        pow_neg_beta);
  });
  return cudaGetLastError();
}

template <typename T, typename A>
cudaError_t backward_typed(const void* g, const void* x, void* dx, const ColumnShape& s,
                           const LrnArgs& args, cudaStream_t stream) {
  const int threads = cuda_backward_threads(args.size / 2, sizeof(A));
  if (threads == 0) return cudaErrorInvalidConfiguration;  // the op refuses such sizes first
  Launch launch;
  if (cudaError_t err = plan(s, threads, &launch); err != cudaSuccess) return err;
  const size_t shared_bytes = size_t(backward_ring_rows(args.size / 2)) * threads * sizeof(A);
  with_pow<A>(args.beta, [&](auto pow_neg_beta) {
    backward_kernel<T, A><<<launch.grid, launch.threads, shared_bytes, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(x), static_cast<T*>(dx), s,
        launch.chunk, lrn_params<A>(args), pow_neg_beta);
  });
  return cudaGetLastError();
}

bool empty(const ColumnShape& s) { return s.batch == 0 || s.channels == 0 || s.pixels == 0; }

}  // namespace

cudaError_t relu_lrn_forward_cuda(CudaDtype dtype, const void* x, void* y, ColumnShape shape,
                                  const LrnArgs& args, cudaStream_t stream) {
  if (empty(shape)) return cudaSuccess;
  switch (dtype) {
    case CudaDtype::kFloat: return forward_typed<float, float>(x, y, shape, args, stream);
    case CudaDtype::kDouble: return forward_typed<double, double>(x, y, shape, args, stream);
    case CudaDtype::kHalf: return forward_typed<__half, float>(x, y, shape, args, stream);
    case CudaDtype::kBFloat16:
      return forward_typed<__nv_bfloat16, float>(x, y, shape, args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t relu_lrn_backward_cuda(CudaDtype dtype, const void* grad, const void* x,
                                   void* grad_input, ColumnShape shape, const LrnArgs& args,
                                   cudaStream_t stream) {
  if (empty(shape)) return cudaSuccess;
  switch (dtype) {
    case CudaDtype::kFloat:
      return backward_typed<float, float>(grad, x, grad_input, shape, args, stream);
    case CudaDtype::kDouble:
      return backward_typed<double, double>(grad, x, grad_input, shape, args, stream);
    case CudaDtype::kHalf:
      return backward_typed<__half, float>(grad, x, grad_input, shape, args, stream);
    case CudaDtype::kBFloat16:
      return backward_typed<__nv_bfloat16, float>(grad, x, grad_input, shape, args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace twocol
