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
// Only inv is saved from the forward pass; s is recomputed from x by the same window sum,
// which is cheaper than a second pow.
//
// Window sums slide along the channels (add the entering channel, subtract the leaving one),
// so each element costs O(1) whatever n. A sliding float sum carries a rounding error of about
// C * eps * (largest window sum); it enters s multiplied by alpha, next to k, so with the
// paper's k = 2, alpha = 1e-4 it stays far below float32 resolution of s.
//
// The column functions process `lanes` adjacent pixels at once (pixel stride 1, channel stride
// `cstride`): the CPU passes a run of a plane's pixels so the inner loops vectorise and stream
// through memory; a CUDA thread passes lanes = 1. They compute output channels
// [c_begin, c_end) only, so a column can be split into chunks (CUDA does, for parallelism).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TWOCOL_HD __host__ __device__ __forceinline__
#else
#define TWOCOL_HD inline
#endif

#if defined(_OPENMP) && !defined(__CUDACC__)
#define TWOCOL_SIMD _Pragma("omp simd")
#else
#define TWOCOL_SIMD
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

// s^-beta for any beta.
template <typename A>
struct PowNegBeta {
  A beta;
  TWOCOL_HD A operator()(A s) const {
#ifdef __CUDA_ARCH__
    return pow(s, -beta);
#else
    return std::pow(s, -beta);
#endif
  }
};

// s^-0.75, the paper's and the 2012 code's beta: two square roots instead of pow, which
// vectorises on the CPU and is several times cheaper on both.
template <typename A>
struct PowNegThreeQuarters {
  TWOCOL_HD A operator()(A s) const {
    const A r = lrn_sqrt(s);
    return A(1) / (r * lrn_sqrt(r));
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

// One channel's row of `lanes` pixels, with weight w = 1. A row outside the channels a window
// may use has w = 0 and points at a valid row that is read and multiplied by 0: that keeps
// every lane loop free of branches and of selects on a scalar (g++ vectorises neither), and
// costs a CUDA thread one cached load. Multiplying by 0 is exact as the values read are
// finite: k > 0 and alpha >= 0 (checked by the ops) keep s >= k, and a non-finite input
// already turns its column into NaN from h + 1 channels past it on, through the sliding sums
// (inf - inf), where the reference has non-finite values only within the window around it.
template <typename T, typename A>
struct Row {
  const T* p;
  A w;
};

template <typename A, typename T>
TWOCOL_HD Row<T, A> row_at(const T* base, int64_t c, int64_t lo, int64_t channels,
                           int64_t cstride) {
  const bool on = c >= lo && c < channels;
  return Row<T, A>{base + (on ? c : lo) * cstride, on ? A(1) : A(0)};
}

template <typename A, typename T>
TWOCOL_HD A square_at(Row<T, A> r, int64_t l, bool relu) {
  const A a = activation(Convert<T, A>::load(r.p[l]), relu);
  return a * a * r.w;
}

// Forward for output channels [c_begin, c_end) of `lanes` columns. win: `lanes` scratch values.
template <typename A, typename T, typename Pow>
TWOCOL_HD void relu_lrn_forward_columns(const T* __restrict__ x, T* __restrict__ y,
                                        T* __restrict__ inv, A* __restrict__ win, int64_t lanes,
                                        int64_t cstride, int64_t channels, int64_t c_begin,
                                        int64_t c_end, LrnParams<A> p, Pow pow_neg_beta) {
  if (c_begin >= c_end) return;
  const int64_t h = p.half;
  const bool relu = p.relu_first;
  // First channel whose square enters a window we need; nothing below it is ever added.
  const int64_t lo = c_begin - h > 0 ? c_begin - h : 0;
  for (int64_t l = 0; l < lanes; ++l) win[l] = A(0);
  // win at channel c is the window sum over [c - h, c + h].
  auto head = [=](int64_t c) { return row_at<A>(x, c + h, lo, channels, cstride); };
  auto tail = [=](int64_t c) { return row_at<A>(x, c - h - 1, lo, channels, cstride); };
  auto slide = [=](Row<T, A> in, Row<T, A> out, int64_t l) {
    win[l] += square_at<A>(in, l, relu) - square_at<A>(out, l, relu);
  };
  for (int64_t c = lo - h; c < c_begin; ++c) {
    const Row<T, A> in = head(c), out = tail(c);
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) slide(in, out, l);
  }
  for (int64_t c = c_begin; c < c_end; ++c) {
    const Row<T, A> in = head(c), out = tail(c);
    const T* xc = x + c * cstride;
    T* yc = y + c * cstride;
    T* ic = inv + c * cstride;
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) {
      slide(in, out, l);
      const A r = pow_neg_beta(p.k + p.alpha * win[l]);
      const A b = activation(Convert<T, A>::load(xc[l]), relu) * r;
      ic[l] = Convert<T, A>::store(r);
      yc[l] = Convert<T, A>::store(activation(b, !relu));
    }
  }
}

// Backward for output channels [j_begin, j_end) of `lanes` columns. win: 3 * lanes scratch.
// Three sliding sums per column: s at channel j + h (for the t entering u), s at j - h - 1
// (for the t leaving u, recomputed rather than stored), and u itself.
template <typename A, typename T>
TWOCOL_HD void relu_lrn_backward_columns(const T* __restrict__ g, const T* __restrict__ x,
                                         const T* __restrict__ inv, T* __restrict__ dx,
                                         A* __restrict__ win, int64_t lanes, int64_t cstride,
                                         int64_t channels, int64_t j_begin, int64_t j_end,
                                         LrnParams<A> p) {
  if (j_begin >= j_end) return;
  const int64_t h = p.half;
  const bool relu = p.relu_first;
  A* s_head = win;
  A* s_tail = win + lanes;
  A* u = win + 2 * lanes;
  const A keep_cross = relu ? A(0) : A(1);
  // u at j_begin needs t from u_lo on; t at u_lo needs squares from a_lo on.
  const int64_t u_lo = j_begin - h > 0 ? j_begin - h : 0;
  const int64_t a_lo = u_lo - h > 0 ? u_lo - h : 0;
  for (int64_t l = 0; l < 3 * lanes; ++l) win[l] = A(0);
  // Rows step j reads: squares entering/moving between/leaving the two s windows, and the
  // channels whose t enters and leaves u.
  struct Rows {
    Row<T, A> enter, middle, leave, t_in, t_out;
  };
  auto rows = [=](int64_t j) {
    return Rows{row_at<A>(x, j + 2 * h, a_lo, channels, cstride),
                row_at<A>(x, j - 1, a_lo, channels, cstride),
                row_at<A>(x, j - 2 * h - 2, a_lo, channels, cstride),
                row_at<A>(x, j + h, u_lo, channels, cstride),
                row_at<A>(x, j - h - 1, u_lo, channels, cstride)};
  };
  // t at the channel of x row xr (g and inv at the same offset), 0 where the row is off.
  auto t_at = [=](Row<T, A> xr, A s_sum, int64_t l) {
    const int64_t i = (xr.p - x) + l;
    const A xv = Convert<T, A>::load(x[i]);
    const A t = Convert<T, A>::load(g[i]) * xv * Convert<T, A>::load(inv[i]) /
                (p.k + p.alpha * s_sum);
    return (xv > A(0) ? t : A(0)) * xr.w;
  };
  // After step j: s_head sums [j, j + 2h] (s at j + h), s_tail sums [j - 2h - 1, j - 1]
  // (s at j - h - 1), u sums t over [j - h, j + h].
  auto slide = [=](const Rows& r, int64_t l) {
    const A middle = square_at<A>(r.middle, l, relu);
    s_head[l] += square_at<A>(r.enter, l, relu) - middle;
    s_tail[l] += middle - square_at<A>(r.leave, l, relu);
    u[l] += t_at(r.t_in, s_head[l], l) - t_at(r.t_out, s_tail[l], l);
  };
  for (int64_t j = a_lo - 2 * h; j < j_begin; ++j) {
    const Rows r = rows(j);
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) slide(r, l);
  }
  for (int64_t j = j_begin; j < j_end; ++j) {
    const Rows r = rows(j);
    const T* gj = g + j * cstride;
    const T* xj = x + j * cstride;
    const T* ij = inv + j * cstride;
    T* dj = dx + j * cstride;
    TWOCOL_SIMD
    for (int64_t l = 0; l < lanes; ++l) {
      slide(r, l);
      const A xv = Convert<T, A>::load(xj[l]);
      const A direct = Convert<T, A>::load(gj[l]) * Convert<T, A>::load(ij[l]);
      const A cross = p.two_alpha_beta * xv * u[l];
      // relu_lrn: 0 where x <= 0; lrn_relu: -cross there. (A weight, not a select on relu.)
      const A d = xv > A(0) ? direct - cross : -cross * keep_cross;
      dj[l] = Convert<T, A>::store(d);
    }
  }
}

}  // namespace twocol
