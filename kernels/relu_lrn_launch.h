// Launch arithmetic of the CUDA kernels (relu_lrn_cuda.cu), in plain C++ so that the CUDA op
// (g++) can check arguments with it before launching and the tests can check it with g++.
#pragma once

#include <cstdint>

#include "relu_lrn.h"

namespace twocol {

constexpr int kCudaMaxThreads = 256;
constexpr int kCudaMinThreads = 32;
// Shared memory a block may use without opting in, on every GPU since compute capability 2.0.
constexpr int64_t kCudaSharedBytesPerBlock = 48 * 1024;
// Each channel chunk re-reads a halo of 2h (forward) or 4h (backward) channels; below this
// many channels per chunk the halo traffic outweighs the extra parallelism.
constexpr int64_t kCudaMinChunk = 32;
constexpr int64_t kCudaMaxChunks = 65535;  // gridDim.y

// Threads per block of the backward kernel: the most (a power of two, at most 256) whose
// rings, backward_ring_rows(half) accumulator values per thread in shared memory, fit in
// kCudaSharedBytesPerBlock; 0 if not even kCudaMinThreads fit (a window too wide for CUDA).
inline int cuda_backward_threads(int64_t half, int64_t accumulator_bytes) {
  const int64_t per_thread = backward_ring_rows(half) * accumulator_bytes;
  for (int threads = kCudaMaxThreads; threads >= kCudaMinThreads; threads /= 2)
    if (per_thread * threads <= kCudaSharedBytesPerBlock) return threads;
  return 0;
}

// The widest window the CUDA kernels take: 255 channels (float accumulators), 127 (double).
inline int64_t cuda_max_size(int64_t accumulator_bytes) {
  int64_t half = 0;
  while (cuda_backward_threads(half + 1, accumulator_bytes) > 0) ++half;
  return 2 * half + 1;
}

// Channels per chunk: split the channels only when the columns (batch * pixels threads) alone
// would not give every SM (up to 2048 resident threads each) two full waves.
inline int64_t cuda_channel_chunk(const ColumnShape& s, int64_t sms) {
  const int64_t columns = s.batch * s.pixels;
  const int64_t wanted = sms * 2048 * 2;
  int64_t max_chunks = s.channels / kCudaMinChunk > 1 ? s.channels / kCudaMinChunk : 1;
  max_chunks = max_chunks < kCudaMaxChunks ? max_chunks : kCudaMaxChunks;
  int64_t chunks = (wanted + columns - 1) / columns;
  chunks = chunks < max_chunks ? chunks : max_chunks;
  return (s.channels + chunks - 1) / chunks;
}

}  // namespace twocol
