// The fused ReLU+LRN math, the one definition shared by the CPU source (g++) and the CUDA
// source (nvcc). No torch headers here, so the CUDA kernels compile without them.
//
// For one pixel's channel column a[0..C) (a = relu(x) for "relu_lrn", a = x for "lrn_relu"):
//   s[c]   = k + alpha * sum_{j=c-h}^{c+h} a[j]^2       h = n/2, channels outside [0, C) are 0
//   inv[c] = s[c]^-beta
//   relu_lrn: y[c] = a[c] * inv[c]            lrn_relu: y[c] = relu(x[c] * inv[c])
// alpha here multiplies the plain sum ("sum" convention); callers convert "mean" first.
//
// Backward, with t[c] = g[c] * x[c] * inv[c] / s[c] where x[c] > 0 and 0 elsewhere (the same
// expression for both orders: relu_lrn has a[c] = 0 there, lrn_relu's ReLU masks g[c] there):
//   u[j]  = sum_{c=j-h}^{j+h} t[c]
//   relu_lrn: dx[j] = x[j] > 0 ? g[j] * inv[j] - 2 alpha beta x[j] u[j] : 0
//   lrn_relu: dx[j] = (x[j] > 0 ? g[j] * inv[j] : 0) - 2 alpha beta x[j] u[j]
// Nothing but x is saved from the forward pass: the backward pass recomputes s and inv from x.
// Both passes are bound by memory traffic, and the recomputation costs two square roots and a
// division per element where storing inv costs a tensor written and read again (plus, on the
// CPU, the page faults of a fresh tensor), so the forward pass moves 2 tensors (x in, y out)
// and the backward pass 3 (g and x in, dx out), every element once.
//
// Window sums slide along the channels (add the entering channel, subtract the leaving one),
// so each element costs O(1) whatever n. A sliding float sum carries a rounding error of about
// C * eps * (largest window sum); it enters s multiplied by alpha, next to k, so with the
// paper's k = 2, alpha = 1e-4 it stays far below float32 resolution of s.
//
// The column functions process `lanes` adjacent pixels at once (pixel stride 1, channel stride
// `cstride`): the CPU passes a run of a plane's pixels so the inner loops vectorise and stream
// through memory; a CUDA thread passes lanes = 1. Their scratch has one row of `lanes` values
// per running sum (the CPU: a buffer per run; CUDA: registers) and, for the backward pass's
// rings, rows `rstride` apart (the CPU: the same buffer; CUDA: shared memory, one column per
// thread). They compute output channels [c_begin, c_end) only, so a column can be split into
// chunks (CUDA does, for parallelism).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TWOCOL_HD __host__ __device__ __forceinline__
#else
// Forced so that every helper lands inside the CPU's per-ISA clones (relu_lrn_cpu.cpp): an
// out-of-line helper would be compiled for the baseline ISA only.
#define TWOCOL_HD inline __attribute__((always_inline))
#endif

#if defined(_OPENMP) && !defined(__CUDACC__)
#define TWOCOL_SIMD _Pragma("omp simd")
#else
#define TWOCOL_SIMD
#endif

#ifdef __CUDA_ARCH__
// Unrolled channel steps let the compiler issue the next steps' global loads together, so that
// a thread keeps several loads in flight instead of one (memory-level parallelism). Not for
// double accumulators: their IEEE division and square roots call slow-path subroutines, and
// the values kept live across those calls spill.
#define TWOCOL_UNROLL_CHANNELS(A) _Pragma("unroll (sizeof(A) == sizeof(float) ? 4 : 1)")
#else
#define TWOCOL_UNROLL_CHANNELS(A)
#endif

namespace twocol {

// What the caller asks for, in double whatever the tensor's dtype.
struct LrnArgs {
  int64_t size;     // window width n, odd
  double k;
  double alpha;     // multiplies the plain windowed sum of squares
  double beta;
  bool relu_first;  // true: ReLU then LRN (the paper); false: LRN then ReLU (2012 code, layer 1)
};

// A contiguous (batch, channels, pixels) tensor: NCHW with pixels = H * W.
struct ColumnShape {
  int64_t batch, channels, pixels;
};

// LrnArgs in the accumulation type A, with the backward constant folded.
template <typename A>
struct LrnParams {
  int64_t half;
  A k, alpha, two_alpha_beta;
  bool relu_first;
};

template <typename A>
inline LrnParams<A> lrn_params(const LrnArgs& args) {
  return LrnParams<A>{args.size / 2, A(args.k), A(args.alpha), A(2.0 * args.alpha * args.beta),
                      args.relu_first};
}

// Scratch the backward pass needs per lane: two running sums (of squares, and u), and rings of
// the last 2h + 1 values of t (the one leaving u is subtracted) and of the last h + 1 direct
// terms g * inv (dx[j] is written h channels after its t and inv are computed).
TWOCOL_HD int64_t backward_ring_rows(int64_t half) { return 3 * half + 2; }

// Storage type T <-> accumulation type A. CUDA's half types specialise this (relu_lrn_cuda.cu)
// because torch builds with their implicit conversions switched off.
template <typename T, typename A>
struct Convert {
  static TWOCOL_HD A load(T v) { return static_cast<A>(v); }
  static TWOCOL_HD T store(A v) { return static_cast<T>(v); }
};

template <typename A>
TWOCOL_HD A lrn_sqrt(A v) {
#ifdef __CUDA_ARCH__
  return sqrt(v);
#else
  return std::sqrt(v);
#endif
}

// On CUDA, float accumulators (float32, float16, bfloat16 tensors) use the hardware's
// approximate reciprocal square root, power and division (a few ulp, far inside the 1e-5 the
// tests ask of float32): the IEEE versions branch to slow-path subroutines that keep the
// compiler from issuing the next channels' loads early. s >= k > 0 is never tiny, huge or
// subnormal, the inputs those approximations would get wrong.
#ifdef __CUDA_ARCH__
#define TWOCOL_CUDA_FLOAT(A) (sizeof(A) == sizeof(float))
#else
#define TWOCOL_CUDA_FLOAT(A) false
#endif

// s^-beta for any beta; also sets over_s = s^-beta / s (the backward pass's t needs it; the
// forward pass ignores it and the compiler drops the division).
template <typename A>
struct PowNegBeta {
  A beta;
  TWOCOL_HD A operator()(A s, A& over_s) const {
#ifdef __CUDA_ARCH__
    if (TWOCOL_CUDA_FLOAT(A)) {
      const float v = __powf(s, -beta);
      over_s = __fdividef(v, s);
      return v;
    }
    const A v = pow(s, -beta);
#else
    const A v = std::pow(s, -beta);
#endif
    over_s = v / s;
    return v;
  }
};

// s^-0.75, the paper's and the 2012 code's beta, from square roots instead of pow: several
// times cheaper, and it vectorises on the CPU. The CPU and double: q = sqrt(1 / s), one
// division and two square roots, s^-0.75 = q * sqrt(q), s^-1.75 = s^-0.75 / s with the
// reciprocal already there. CUDA floats: q = rsqrt(s), s^-0.75 = q^2 * rsqrt(q).
template <typename A>
struct PowNegThreeQuarters {
  TWOCOL_HD A operator()(A s, A& over_s) const {
#ifdef __CUDA_ARCH__
    if (TWOCOL_CUDA_FLOAT(A)) {
      const float q = rsqrtf(s), r = q * q;
      const float v = r * rsqrtf(q);
      over_s = v * r;
      return v;
    }
#endif
    const A r = A(1) / s;
    const A q = lrn_sqrt(r);
    const A v = q * lrn_sqrt(q);
    over_s = v * r;
    return v;
  }
};

// Calls f with the cheapest s^-beta functor for beta (each is accurate to a few ulp).
template <typename A, typename F>
inline void with_pow(double beta, F&& f) {
  if (beta == 0.75) {
    f(PowNegThreeQuarters<A>{});
  } else {
    f(PowNegBeta<A>{A(beta)});
  }
}

template <typename A>
TWOCOL_HD A activation(A v, bool relu) {
  // v < 0 rather than v <= 0 keeps a NaN a NaN, as torch.relu does.
  return relu && v < A(0) ? A(0) : v;
}

// One channel's row of `lanes` pixels, as an element offset from the column's start, with
// weight w = 1. A row outside the channels a window may use has w = 0 and the offset of a valid
// row, which is read and multiplied by 0: that keeps every lane loop free of branches and of
// selects on a scalar (g++ vectorises neither), and costs a CUDA thread one cached load.
// Multiplying by 0 is exact as the values read are finite: k > 0 and alpha >= 0 (checked by
// the ops) keep s >= k, and a non-finite input already turns its column into NaN from h + 1
// channels past it on, through the sliding sums (inf - inf), where the reference has
// non-finite values only within the window around it.
template <typename A>
struct Row {
  int64_t at;
  A w;
};

template <typename A>
TWOCOL_HD Row<A> row_at(int64_t c, int64_t lo, int64_t channels, int64_t cstride) {
  const bool on = c >= lo && c < channels;
  return Row<A>{(on ? c : lo) * cstride, on ? A(1) : A(0)};
}

template <typename A, typename T>
TWOCOL_HD A load(const T* p) {
  return Convert<T, A>::load(*p);
}

template <typename A, typename T>
TWOCOL_HD A square_at(const T* x, Row<A> r, int64_t l, bool relu) {
  const A a = activation(load<A>(x + r.at + l), relu);
  return a * a * r.w;
}

// The rows one step at channel c of a window sum of squares reads: channel c + h enters,
// c - h - 1 leaves, so that after the step the sum covers [c - h, c + h]. Channels below lo
// (never in a window we need) and past the last one count as 0.
template <typename A>
struct Slide {
  Row<A> enter, leave;
};

template <typename A>
TWOCOL_HD Slide<A> slide_at(int64_t c, int64_t h, int64_t lo, int64_t channels,
                            int64_t cstride) {
  return Slide<A>{row_at<A>(c + h, lo, channels, cstride),
                  row_at<A>(c - h - 1, lo, channels, cstride)};
}

template <typename A, typename T>
TWOCOL_HD A slide_delta(const T* x, const Slide<A>& s, int64_t l, bool relu) {
  return square_at<A>(x, s.enter, l, relu) - square_at<A>(x, s.leave, l, relu);
}

// The helpers above and below are functions rather than lambdas: g++ does not always inline a
// lambda called in a vectorised loop, and a call per element is ten times slower.

// Forward for output channels [c_begin, c_end) of `lanes` columns. win: one scratch row.
template <typename A, typename T, typename Pow>
TWOCOL_HD void relu_lrn_forward_columns(const T* __restrict__ x, T* __restrict__ y,
                                        A* __restrict__ win, int64_t lanes, int64_t cstride,
                                        int64_t channels, int64_t c_begin, int64_t c_end,
                                        LrnParams<A> p, Pow pow_neg_beta) {
  if (c_begin >= c_end) return;
  const int64_t h = p.half;
  const bool relu = p.relu_first;
  // First channel whose square enters a window we need; nothing below it is ever added.
  const int64_t lo = c_begin - h > 0 ? c_begin - h : 0;
  for (int64_t l = 0; l < lanes; ++l) win[l] = A(0);
  for (int64_t c = lo - h; c < c_begin; ++c) {
    const Slide<A> sl = slide_at<A>(c, h, lo, channels, cstride);
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) win[l] += slide_delta<A>(x, sl, l, relu);
  }
  TWOCOL_UNROLL_CHANNELS(A)
  for (int64_t c = c_begin; c < c_end; ++c) {
    const Slide<A> sl = slide_at<A>(c, h, lo, channels, cstride);
    const T* xc = x + c * cstride;
    T* yc = y + c * cstride;
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) {
      win[l] += slide_delta<A>(x, sl, l, relu);
      A unused;
      const A r = pow_neg_beta(p.k + p.alpha * win[l], unused);
      const A b = activation(load<A>(xc + l), relu) * r;
      yc[l] = Convert<T, A>::store(activation(b, !relu));
    }
  }
}

// The backward pass's step at channel c for one lane: slides the sum of squares sq to s[c],
// computes inv[c], t[c] and the direct term g[c] * inv[c] (into dc), slides u by t[c] entering
// and t[c - 2h - 1] (read from tc, which then takes t[c]) leaving; returns u, now u[c - h].
// at: channel c's row, w = 0 past the last channel.
template <typename A, typename T, typename Pow>
TWOCOL_HD A backward_step(const T* g, const T* x, const Slide<A>& sl, Row<A> at, int64_t l,
                          const LrnParams<A>& p, const Pow& pow_neg_beta, A& sq, A& u, A& tc,
                          A& dc) {
  sq += slide_delta<A>(x, sl, l, p.relu_first);
  const A xv = load<A>(x + at.at + l);
  const A gv = load<A>(g + at.at + l);
  A inv_over_s;
  const A inv = pow_neg_beta(p.k + p.alpha * sq, inv_over_s);
  const A t = (xv > A(0) ? gv * xv * inv_over_s : A(0)) * at.w;
  u += t - tc;
  tc = t;
  dc = gv * inv;
  return u;
}

TWOCOL_HD int64_t next_row(int64_t r, int64_t rows) { return r + 1 == rows ? 0 : r + 1; }

// Backward for output channels [j_begin, j_end) of `lanes` columns. sums: two scratch rows of
// `lanes`; rings: backward_ring_rows rows, `rstride` apart. One walk down the channels: the step
// at channel c slides the sum of squares to s[c], computes inv[c], t[c] and the direct term,
// slides u to u[c - h] and writes dx[c - h]. So every x and g element is read from memory
// once, dx written once.
template <typename A, typename T, typename Pow>
TWOCOL_HD void relu_lrn_backward_columns(const T* __restrict__ g, const T* __restrict__ x,
                                         T* __restrict__ dx, A* __restrict__ sums,
                                         A* __restrict__ rings, int64_t rstride, int64_t lanes,
                                         int64_t cstride, int64_t channels, int64_t j_begin,
                                         int64_t j_end, LrnParams<A> p, Pow pow_neg_beta) {
  if (j_begin >= j_end) return;
  const int64_t h = p.half;
  const int64_t t_ring = 2 * h + 1, d_ring = h + 1;
  A* sq = sums;
  A* u = sums + lanes;
  A* ts = rings;                      // t[c] in row (c - t_lo) % t_ring
  A* ds = rings + t_ring * rstride;   // g[c] * inv[c] in row (c - t_lo) % d_ring
  const A keep_cross = p.relu_first ? A(0) : A(1);
  // u at j_begin needs t from t_lo on; s at t_lo needs squares from a_lo on. Steps run to
  // c = j_end - 1 + h, the last t that u[j_end - 1] needs (zero past the last channel).
  const int64_t t_lo = j_begin - h > 0 ? j_begin - h : 0;
  const int64_t a_lo = t_lo - h > 0 ? t_lo - h : 0;
  const int64_t c_end = j_end + h;
  for (int64_t l = 0; l < lanes; ++l) {
    sq[l] = A(0);
    u[l] = A(0);
  }
  for (int64_t r = 0; r < t_ring; ++r)
    for (int64_t l = 0; l < lanes; ++l) ts[r * rstride + l] = A(0);  // t below t_lo: 0
  for (int64_t c = a_lo - h; c < t_lo; ++c) {
    const Slide<A> sl = slide_at<A>(c, h, a_lo, channels, cstride);
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) sq[l] += slide_delta<A>(x, sl, l, p.relu_first);
  }
  int64_t tr = 0, dr = 0;  // rows of t[c] and of the direct term at c
  // Steps before c = j_begin + h only fill the windows; the rest also write dx[c - h].
  const int64_t first_out = j_begin + h;
  for (int64_t c = t_lo; c < first_out; ++c) {
    const Slide<A> sl = slide_at<A>(c, h, a_lo, channels, cstride);
    const Row<A> at = row_at<A>(c, t_lo, channels, cstride);
    A* tc = ts + tr * rstride;
    A* dc = ds + dr * rstride;
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l)
      backward_step<A>(g, x, sl, at, l, p, pow_neg_beta, sq[l], u[l], tc[l], dc[l]);
    tr = next_row(tr, t_ring);
    dr = next_row(dr, d_ring);
  }
  TWOCOL_UNROLL_CHANNELS(A)
  for (int64_t c = first_out; c < c_end; ++c) {
    const Slide<A> sl = slide_at<A>(c, h, a_lo, channels, cstride);
    const Row<A> at = row_at<A>(c, t_lo, channels, cstride);
    const int64_t j = c - h;
    A* tc = ts + tr * rstride;
    A* dc = ds + dr * rstride;
    const A* dj = ds + next_row(dr, d_ring) * rstride;  // g[j] * inv[j], from h steps ago
    const T* xj = x + j * cstride;
    T* dxj = dx + j * cstride;
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) {
      const A uj = backward_step<A>(g, x, sl, at, l, p, pow_neg_beta, sq[l], u[l], tc[l], dc[l]);
      const A xv = load<A>(xj + l);
      const A cross = p.two_alpha_beta * xv * uj;
      // relu_lrn: 0 where x <= 0; lrn_relu: -cross there. (A weight, not a select on relu.)
      dxj[l] = Convert<T, A>::store(xv > A(0) ? dj[l] - cross : -cross * keep_cross);
    }
    tr = next_row(tr, t_ring);
    dr = next_row(dr, d_ring);
  }
}

}  // namespace twocol
