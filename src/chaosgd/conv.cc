// chaosgd's convolution kernels as XLA FFI custom calls, built by gemm.py into the same library as gemm.cc:
// unfolding patches (im2col) and folding them back (its adjoint); non-overlapping max pooling with the position of
// each window's maximum, and gathering and scattering by those positions (its derivative and their adjoint); a
// convolution read at the maxima and its transposes; a 3 x 3 convolution and its pooling in one. XLA's own
// CPU code for these memory-bound steps runs far below the machine's memory speed in float64
// (benchmarks/cnn_throughput.py); these are plain loops.
// Row-major layouts: images (B, C, n, H, W), B a batch of networks; patches (B, C * kh * kw, n * Ho * Wo).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sched.h>
#include <thread>
#include <vector>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Runs f(begin, end) over [0, count) split across threads: as many as OMP_NUM_THREADS says (chaosgd's worker
// processes set 1), else the cores this process may run on (its affinity: taskset, cgroups, SLURM). These steps are
// memory-bound; one thread leaves bandwidth unused.
template <typename F>
static void parallel_for(int64_t count, F f) {
  static const int64_t threads = [] {
    const char* told = std::getenv("OMP_NUM_THREADS");
    int64_t n = told ? std::atoll(told) : int64_t(std::thread::hardware_concurrency());
    cpu_set_t allowed;
    if (!told && sched_getaffinity(0, sizeof(allowed), &allowed) == 0) n = CPU_COUNT(&allowed);
    return n > 0 ? n : int64_t(1);
  }();
  const int64_t used = std::min(threads, count);
  if (used <= 1) {
    f(int64_t(0), count);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < used; ++t) pool.emplace_back(f, count * t / used, count * (t + 1) / used);
  f(int64_t(0), count / used);
  for (auto& thread : pool) thread.join();
}

struct Geometry {
  int64_t kh, kw, sh, sw, pt, pl, dh, dw, ho, wo;
};

// Output columns wo in [lo, hi) read an input column inside the image for kernel column j.
static void inside_columns(const Geometry& g, int64_t W, int64_t j, int64_t* lo, int64_t* hi) {
  *lo = 0, *hi = g.wo;
  while (*lo < g.wo && *lo * g.sw - g.pl + j * g.dw < 0) ++*lo;
  while (*hi > *lo && (*hi - 1) * g.sw - g.pl + j * g.dw >= W) --*hi;
}

// x (B, C, n, H, W) -> patches (B, C * kh * kw, n * Ho * Wo): row (c, i, j) holds x[c] shifted by the kernel
// offset (i, j), zero where the window lies in the padding.
static ffi::Error Patches(ffi::Buffer<ffi::F64> x, ffi::ResultBuffer<ffi::F64> out, int64_t kh, int64_t kw,
                          int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho,
                          int64_t wo) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto d = x.dimensions();
  const int64_t C = d[1], n = d[2], H = d[3], W = d[4], rows = d[0] * C * kh * kw;
  const double* src = x.typed_data();
  double* dst = out->typed_data();
  parallel_for(rows, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const int64_t bc = row / (kh * kw), i = row / kw % kh, j = row % kw;
      int64_t lo, hi;
      inside_columns(g, W, j, &lo, &hi);
      for (int64_t img = 0; img < n; ++img)
        for (int64_t r = 0; r < ho; ++r) {
          double* o = dst + (row * n + img) * ho * wo + r * wo;
          const int64_t h_in = r * sh - pt + i * dh;
          if (h_in < 0 || h_in >= H) {
            for (int64_t w = 0; w < wo; ++w) o[w] = 0.0;
            continue;
          }
          const int64_t in = ((bc * n + img) * H + h_in) * W - pl + j * dw;  // + w * sw: inside for w in [lo, hi)
          for (int64_t w = 0; w < lo; ++w) o[w] = 0.0;
          if (sw == 1) {
            for (int64_t w = lo; w < hi; ++w) o[w] = src[in + w];
          } else {
            for (int64_t w = lo; w < hi; ++w) o[w] = src[in + w * sw];
          }
          for (int64_t w = hi; w < wo; ++w) o[w] = 0.0;
        }
    }
  });
  return ffi::Error::Success();
}

// The adjoint of Patches: every patch entry added back to the input position it was read from. Each (b, c) image
// is summed by one thread from its kh * kw rows.
static ffi::Error Fold(ffi::Buffer<ffi::F64> patches, ffi::ResultBuffer<ffi::F64> out, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho,
                       int64_t wo) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto d = out->dimensions();
  const int64_t C = d[1], n = d[2], H = d[3], W = d[4];
  const double* src = patches.typed_data();
  double* dst = out->typed_data();
  parallel_for(d[0] * C, [&](int64_t first, int64_t last) {
    for (int64_t bc = first; bc < last; ++bc) {
      double* image = dst + bc * n * H * W;
      std::memset(image, 0, n * H * W * sizeof(double));
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) {
          const int64_t row = (bc * kh + i) * kw + j;
          int64_t lo, hi;
          inside_columns(g, W, j, &lo, &hi);
          for (int64_t img = 0; img < n; ++img)
            for (int64_t r = 0; r < ho; ++r) {
              const int64_t h_in = r * sh - pt + i * dh;
              if (h_in < 0 || h_in >= H) continue;
              const double* o = src + (row * n + img) * ho * wo + r * wo;
              const int64_t in = (img * H + h_in) * W - pl + j * dw;
              for (int64_t w = lo; w < hi; ++w) image[in + w * sw] += o[w];
            }
        }
    }
  });
  return ffi::Error::Success();
}

// The last two axes of (..., H, W) in non-overlapping ph x pw windows: H, W, the count M of the leading entries,
// and the windows down and across, Ho and Wo (rows and columns beyond a whole window are left out).
struct Windows {
  int64_t H, W, M, Ho, Wo;
};

template <typename Dims>
static Windows windows(const Dims& d, int64_t ph, int64_t pw) {
  int64_t M = 1;
  for (size_t i = 0; i + 2 < d.size(); ++i) M *= d[i];
  const int64_t H = d[d.size() - 2], W = d[d.size() - 1];
  return Windows{H, W, M, H / ph, W / pw};
}

// A window's first maximum, in the order of its entries, a NaN counting as the maximum (so that NaN propagates):
// entry a, after the first, taken or not (no branch on the data).
static inline void keep_maximum(double v, int32_t a, double& best, int32_t& arg) {
  const bool take = v > best || (v != v && best == best);
  best = take ? v : best;
  arg = take ? a : arg;
}

// The same for a window of four entries, without branches on the data (random signs mispredict); `ok` false
// where one is NaN (or inf - inf): keep_maximum then decides.
struct Maximum {
  double value;
  int32_t at;
  bool ok;
};

static inline Maximum maximum_of_four(double v0, double v1, double v2, double v3) {
  // (a < b ? b : a compiles to maxsd, and the position is arithmetic: no branch)
  const int32_t g01 = v1 > v0, g23 = v3 > v2;
  const double m01 = v0 < v1 ? v1 : v0, m23 = v2 < v3 ? v3 : v2;
  const int32_t g = m23 > m01;
  const double sum = v0 + v1 + v2 + v3;
  return Maximum{m01 < m23 ? m23 : m01, g01 + g * (2 + g23 - g01), sum == sum};
}

// The maximum of each non-overlapping ph x pw window of the last two axes (rows and columns beyond a whole window
// are left out) and its offset a * pw + b in the window (the first maximum); a NaN counts as the maximum, so that
// NaN propagates.
static ffi::Error Pool(ffi::Buffer<ffi::F64> x, ffi::ResultBuffer<ffi::F64> y, ffi::ResultBuffer<ffi::S32> where,
                       int64_t ph, int64_t pw) {
  const Windows shape = windows(x.dimensions(), ph, pw);
  const int64_t H = shape.H, W = shape.W, M = shape.M, Ho = shape.Ho, Wo = shape.Wo;
  const double* src = x.typed_data();
  double* out = y->typed_data();
  int32_t* at = where->typed_data();
  parallel_for(M * Ho, [&](int64_t first, int64_t last) {
    for (int64_t mr = first; mr < last; ++mr) {
      const double* top = src + ((mr / Ho) * H + (mr % Ho) * ph) * W;
      const double* bottom = top + W;
      for (int64_t c = 0; c < Wo; ++c) {
        if (ph == 2 && pw == 2) {  // the common window, without branches on the data (random signs mispredict)
          // maximum_of_four, written out: called here it ran this kernel at half the speed (GCC 12, -O2; the CNN's
          // second pooling, benchmarks/cnn_throughput.py --profile). The test of ConvPool against this kernel, ties
          // included, holds the two to the same answer.
          const double v0 = top[2 * c], v1 = top[2 * c + 1], v2 = bottom[2 * c], v3 = bottom[2 * c + 1];
          // (a < b ? b : a compiles to maxsd, and the position is arithmetic: no branch)
          const int32_t g01 = v1 > v0, g23 = v3 > v2;
          const double m01 = v0 < v1 ? v1 : v0, m23 = v2 < v3 ? v3 : v2;
          const int32_t g = m23 > m01;
          const double sum = v0 + v1 + v2 + v3;
          if (sum == sum) {  // no NaN in the window (an inf - inf also goes the general way below)
            out[mr * Wo + c] = m01 < m23 ? m23 : m01;
            at[mr * Wo + c] = g01 + g * (2 + g23 - g01);
            continue;
          }
        }
        double best = top[c * pw];
        int32_t arg = 0;
        for (int64_t a = 0; a < ph; ++a)
          for (int64_t b = 0; b < pw; ++b) keep_maximum(top[a * W + c * pw + b], int32_t(a * pw + b), best, arg);
        out[mr * Wo + c] = best;
        at[mr * Wo + c] = arg;
      }
    }
  });
  return ffi::Error::Success();
}

// Where each position a * pw + b of a window lies from the window's first entry, in an image W wide (no division
// per entry below).
static std::vector<int64_t> window_offsets(int64_t ph, int64_t pw, int64_t W) {
  std::vector<int64_t> offset(ph * pw);
  for (int64_t a = 0; a < ph; ++a)
    for (int64_t b = 0; b < pw; ++b) offset[a * pw + b] = a * W + b;
  return offset;
}

// t (..., H, W) at each window's recorded position -> (..., Ho, Wo): the pooling's derivative along t.
static ffi::Error PoolGather(ffi::Buffer<ffi::F64> t, ffi::Buffer<ffi::S32> where, ffi::ResultBuffer<ffi::F64> out,
                             int64_t ph, int64_t pw) {
  const Windows shape = windows(t.dimensions(), ph, pw);
  const int64_t H = shape.H, W = shape.W, M = shape.M, Ho = shape.Ho, Wo = shape.Wo;
  const double* src = t.typed_data();
  const int32_t* at = where.typed_data();
  double* dst = out->typed_data();
  const std::vector<int64_t> offset = window_offsets(ph, pw, W);
  parallel_for(M * Ho, [&](int64_t first, int64_t last) {
    for (int64_t mr = first; mr < last; ++mr) {
      const double* window = src + ((mr / Ho) * H + (mr % Ho) * ph) * W;
      for (int64_t c = 0; c < Wo; ++c) dst[mr * Wo + c] = window[c * pw + offset[at[mr * Wo + c]]];
    }
  });
  return ffi::Error::Success();
}

// The adjoint of PoolGather: each window's value placed at its recorded position, zero elsewhere.
static ffi::Error PoolScatter(ffi::Buffer<ffi::F64> ct, ffi::Buffer<ffi::S32> where, ffi::ResultBuffer<ffi::F64> out,
                              int64_t ph, int64_t pw) {
  const Windows shape = windows(out->dimensions(), ph, pw);
  const int64_t H = shape.H, W = shape.W, M = shape.M, Ho = shape.Ho, Wo = shape.Wo;
  const double* src = ct.typed_data();
  const int32_t* at = where.typed_data();
  double* dst = out->typed_data();
  const std::vector<int64_t> offset = window_offsets(ph, pw, W);
  parallel_for(M, [&](int64_t first, int64_t last) {
    std::memset(dst + first * H * W, 0, (last - first) * H * W * sizeof(double));
    for (int64_t m = first; m < last; ++m)
      for (int64_t r = 0; r < Ho; ++r) {
        double* window = dst + (m * H + r * ph) * W;
        const int64_t k = (m * Ho + r) * Wo;
        for (int64_t c = 0; c < Wo; ++c) window[c * pw + offset[at[k + c]]] = src[k + c];
      }
  });
  return ffi::Error::Success();
}

// A convolution read only at the maxima of its max pooling: for kernels k (B, O, C, kh, kw), images x (Bx, C, n, H,
// W) (Bx = 1: one input shared by the batch, else Bx = B) and the pooling's recorded positions where (B, O, n, Hp,
// Wp) of ph x pw windows over the convolution's output, out[b, o, img, r, s] = conv(x, k)[b, o, img, at the maximum
// of window (r, s)]. Linear in k: the derivative of the pooled convolution along its kernels. Its transpose in k is
// PooledConvT below: the kernels' gradient from the pooled cotangents alone, without scattering them back to the
// convolution's size (4 times the entries for 2 x 2 windows) and a product over all of those mostly-zero entries.
struct Pooled {
  int64_t B, Bx, O, C, n, H, W, Hp, Wp;
};

// Calls f(q, in, top, left, inside) for each window q of one image: `in` points at the input (or, for the input's
// derivative, its place) under tap (0, 0) of the window's maximum in channel 0, (top, left) is that tap's row and
// column, `inside` says whether all taps lie in the image (else each is checked). Positions are decoded by table:
// no division per maximum.
template <typename T, typename F>
static void for_each_maximum(const Geometry& g, const Pooled& p, int64_t ph, int64_t pw, const int32_t* at,
                             T* image, F f) {
  int64_t down[64], across[64];  // (windows of more than 64 entries decode by division)
  const bool table = ph * pw <= 64;
  for (int64_t a = 0; table && a < ph * pw; ++a) down[a] = a / pw, across[a] = a % pw;
  const int64_t reach_h = (g.kh - 1) * g.dh, reach_w = (g.kw - 1) * g.dw;
  for (int64_t r = 0, q = 0; r < p.Hp; ++r)
    for (int64_t c = 0; c < p.Wp; ++c, ++q) {
      const int32_t position = at[q];
      const int64_t a = table ? down[position] : position / pw, b = table ? across[position] : position % pw;
      const int64_t top = (r * ph + a) * g.sh - g.pt, left = (c * pw + b) * g.sw - g.pl;
      const bool inside = top >= 0 && top + reach_h < p.H && left >= 0 && left + reach_w < p.W;
      f(q, image + top * p.W + left, top, left, inside);
    }
}

// The taps of one maximum (all channels) against `kernel`, or accumulated into `taps` (Transpose).
template <bool Transpose>
static inline double taps_at(const Geometry& g, const Pooled& p, const double* in, int64_t top, int64_t left,
                             bool inside, const double* kernel, double* taps, double v) {
  double sum = 0.0;
  for (int64_t c = 0; c < p.C; ++c, in += p.n * p.H * p.W)
    for (int64_t i = 0; i < g.kh; ++i) {
      if (!inside && (top + i * g.dh < 0 || top + i * g.dh >= p.H)) continue;
      const double* line = in + i * g.dh * p.W;
      for (int64_t j = 0; j < g.kw; ++j) {
        if (!inside && (left + j * g.dw < 0 || left + j * g.dw >= p.W)) continue;
        const int64_t t = (c * g.kh + i) * g.kw + j;
        if (Transpose) {
          taps[t] += v * line[j * g.dw];
        } else {
          sum += kernel[t] * line[j * g.dw];
        }
      }
    }
  return sum;
}

static ffi::Error PooledConv(ffi::Buffer<ffi::F64> x, ffi::Buffer<ffi::F64> k, ffi::Buffer<ffi::S32> where,
                             ffi::ResultBuffer<ffi::F64> out, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                             int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t ph,
                             int64_t pw) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto dx = x.dimensions(), dk = k.dimensions(), dp = where.dimensions();
  const Pooled p{dk[0], dx[0], dk[1], dk[2], dx[2], dx[3], dx[4], dp[3], dp[4]};
  const double* image = x.typed_data();
  const double* kernels = k.typed_data();
  const int32_t* at = where.typed_data();
  double* dst = out->typed_data();
  parallel_for(p.B * p.O * p.n, [&](int64_t first, int64_t last) {
    for (int64_t t = first; t < last; ++t) {
      const int64_t bo = t / p.n, img = t % p.n, b = bo / p.O;
      const double* kernel = kernels + bo * p.C * kh * kw;
      const double* in = image + ((p.Bx == 1 ? 0 : b) * p.C * p.n + img) * p.H * p.W;
      double* o = dst + t * p.Hp * p.Wp;
      for_each_maximum(g, p, ph, pw, at + t * p.Hp * p.Wp, in,
                       [&](int64_t q, const double* from, int64_t top, int64_t left, bool inside) {
                         o[q] = taps_at<false>(g, p, from, top, left, inside, kernel, nullptr, 0.0);
                       });
    }
  });
  return ffi::Error::Success();
}

// Four doubles that the compiler keeps in vector registers and computes on with vector instructions (two SSE2
// halves on every x86-64, one AVX register where the CPU has AVX; plain code elsewhere), read from any double's
// place. The same operations in the same order either way: the same bits.
typedef double Quad __attribute__((vector_size(32), aligned(8), may_alias));

// A buffer around one image with a border of zeros wide enough for every tap of 3 x 3 adjacent kernels at any
// window's maximum: rows from -pt to the last window's last row plus two (columns likewise), so that no tap is
// checked against the image's edges. (top, left): the image's first row and column in it; (PH, PW): its size.
struct Border {
  int64_t top, left, PH, PW;
};

static Border border3(const Geometry& g, const Pooled& p, int64_t ph, int64_t pw) {
  const int64_t top = std::max<int64_t>(0, g.pt), left = std::max<int64_t>(0, g.pl);
  const int64_t bottom = std::max<int64_t>(0, (p.Hp * ph - 1) * g.sh - g.pt + 2 - (p.H - 1));
  const int64_t right = std::max<int64_t>(0, (p.Wp * pw - 1) * g.sw - g.pl + 2 - (p.W - 1));
  return Border{top, left, p.H + top + bottom, p.W + left + right};
}

// For each entry a of a ph x pw window: how far its tap (0, 0) lies from its window's, in a buffer of rows of PW
// pixels of `depth` values each.
static std::vector<int64_t> entry_offsets(const Geometry& g, int64_t ph, int64_t pw, int64_t PW, int64_t depth) {
  std::vector<int64_t> offset(ph * pw);
  for (int64_t a = 0; a < ph * pw; ++a) offset[a] = ((a / pw) * g.sh * PW + (a % pw) * g.sw) * depth;
  return offset;
}

// PooledConvT for one channel and 3 x 3 adjacent taps (the CNN's first layer, on the data): each image is copied
// into a buffer with a border of zeros wide enough for every maximum's taps, so no tap is checked against the
// edges, and the nine sums stay in registers across all images of a kernel.
static void PooledConvT3(const Geometry& g, const Pooled& p, int64_t ph, int64_t pw, const double* image,
                         const double* cotangent, const int32_t* at, double* dst) {
  const Border e = border3(g, p, ph, pw);
  const int64_t PW = e.PW, pad_top = e.top, pad_left = e.left;
  const std::vector<int64_t> offset = entry_offsets(g, ph, pw, PW, 1);
  parallel_for(p.B * p.O, [&](int64_t first, int64_t last) {
    std::vector<double> padded(e.PH * PW, 0.0);  // (the border stays zero; the inside is each image in turn)
    const double* origin = padded.data() + (pad_top - g.pt) * PW + (pad_left - g.pl);  // tap (0, 0) of window 0
    for (int64_t bo = first; bo < last; ++bo) {
      const int64_t b = bo / p.O;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0;
      for (int64_t img = 0; img < p.n; ++img) {
        const double* in = image + ((p.Bx == 1 ? 0 : b) * p.n + img) * p.H * p.W;
        for (int64_t h = 0; h < p.H; ++h)
          std::memcpy(padded.data() + (h + pad_top) * PW + pad_left, in + h * p.W, p.W * sizeof(double));
        const double* values = cotangent + (bo * p.n + img) * p.Hp * p.Wp;
        const int32_t* positions = at + (bo * p.n + img) * p.Hp * p.Wp;
        for (int64_t r = 0, q = 0; r < p.Hp; ++r) {
          const double* row = origin + r * ph * g.sh * PW;
          for (int64_t c = 0; c < p.Wp; ++c, ++q) {
            const double* f = row + c * pw * g.sw + offset[positions[q]];
            const double v = values[q];
            s0 += v * f[0], s1 += v * f[1], s2 += v * f[2];
            s3 += v * f[PW], s4 += v * f[PW + 1], s5 += v * f[PW + 2];
            s6 += v * f[2 * PW], s7 += v * f[2 * PW + 1], s8 += v * f[2 * PW + 2];
          }
        }
      }
      double* out = dst + bo * 9;
      out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3, out[4] = s4, out[5] = s5, out[6] = s6, out[7] = s7;
      out[8] = s8;
    }
  });
}

// What ConvPool's pass over one image reads and writes.
struct ConvPoolPass {
  const double* origin;  // the image's zero-bordered copy (channel after channel), at tap (0, 0) of window 0
  const double* fours;   // the kernels that read it, four at a time: (block, tap, kernel of the four)
  const int64_t* offset;  // of each window entry's tap (0, 0) from its window's (entry_offsets)
  const int64_t* tap;     // of each of the taps (9 a channel) from tap (0, 0) of channel 0
  double* values;         // y and where at (first kernel that reads it, this image)
  int32_t* positions;
  int64_t Hp, Wp, row_step, column_step, entries, readers, image_step, taps;  // image_step: n * Hp * Wp
};

// One image, every kernel that reads it: each window's entries, then their maximum and its position as Pool finds
// them. Taps: a.taps, or 9 known to the compiler (one channel). (Inlined into a plain and an AVX copy below.)
template <int64_t Taps>
__attribute__((always_inline)) static inline void conv_pool_pass(const ConvPoolPass& a, Quad* sums) {
  const int64_t blocks = (a.readers + 3) / 4, taps = Taps ? Taps : a.taps;
  for (int64_t block = 0; block < blocks; ++block) {
    const double* k = a.fours + block * taps * 4;
    const int64_t count = std::min<int64_t>(4, a.readers - 4 * block);  // (zero kernels pad the last four)
    for (int64_t r = 0, m = 0; r < a.Hp; ++r) {
      const double* row = a.origin + r * a.row_step;
      for (int64_t c = 0; c < a.Wp; ++c, ++m) {
        const double* corner = row + c * a.column_step;
        // The four kernels' sums at every entry (independent chains side by side), each kernel's taps in order.
        if (a.entries == 4) {  // (2 x 2 windows: the sums in registers)
          const double *f0 = corner + a.offset[0], *f1 = corner + a.offset[1], *f2 = corner + a.offset[2],
                       *f3 = corner + a.offset[3];
          Quad s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0}, s2 = {0, 0, 0, 0}, s3 = {0, 0, 0, 0};
          for (int64_t i = 0; i < taps; ++i) {
            const Quad kernel = *reinterpret_cast<const Quad*>(k + i * 4);
            const int64_t d = a.tap[i];
            s0 += kernel * f0[d], s1 += kernel * f1[d], s2 += kernel * f2[d], s3 += kernel * f3[d];
          }
          sums[0] = s0, sums[1] = s1, sums[2] = s2, sums[3] = s3;
        } else {
          for (int64_t u = 0; u < a.entries; ++u) sums[u] = Quad{0, 0, 0, 0};
          for (int64_t i = 0; i < taps; ++i) {
            const Quad kernel = *reinterpret_cast<const Quad*>(k + i * 4);
            for (int64_t u = 0; u < a.entries; ++u) sums[u] += kernel * corner[a.offset[u] + a.tap[i]];
          }
        }
        for (int64_t j = 0; j < count; ++j) {
          double* out = a.values + (4 * block + j) * a.image_step + m;
          int32_t* at = a.positions + (4 * block + j) * a.image_step + m;
          if (a.entries == 4) {
            const Maximum m4 = maximum_of_four(sums[0][j], sums[1][j], sums[2][j], sums[3][j]);
            if (m4.ok) {
              *out = m4.value, *at = m4.at;
              continue;
            }
          }
          double best = sums[0][j];  // (as Pool)
          int32_t arg = 0;
          for (int64_t u = 1; u < a.entries; ++u) keep_maximum(sums[u][j], int32_t(u), best, arg);
          *out = best, *at = arg;
        }
      }
    }
  }
}

template <int64_t Taps>
static void conv_pool_plain(const ConvPoolPass& a, Quad* sums) { conv_pool_pass<Taps>(a, sums); }
#if defined(__x86_64__) && defined(__GNUC__)
template <int64_t Taps>
__attribute__((target("avx"))) static void conv_pool_avx(const ConvPoolPass& a, Quad* sums) {
  conv_pool_pass<Taps>(a, sums);
}
#endif

// Whether ConvPool runs its AVX copy in this process: where the CPU and the system support AVX, unless
// CHAOSGD_NO_AVX is set (other than to 0), which lets the suite run the plain copy on an AVX machine too.
static bool conv_pool_uses_avx() {
  static const bool avx = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    const char* off = std::getenv("CHAOSGD_NO_AVX");
    if (off && *off && std::strcmp(off, "0") != 0) return false;
    __builtin_cpu_init();  // (idempotent; the CPU's and the system's support of AVX, read before it is asked)
    return __builtin_cpu_supports("avx") != 0;
#else
    return false;
#endif
  }();
  return avx;
}

extern "C" int chaosgd_conv_pool_avx() { return conv_pool_uses_avx(); }

// Convolution and max pooling in one, for 3 x 3 adjacent taps (any channels): kernels k (B, O, C, 3, 3), images x
// (Bx, C, n, H, W) (Bx = 1: shared by the batch) -> the pooled values y and the positions of the maxima where, both
// (B, O, n, Hp, Wp), as Pool gives them over the convolution. Neither the convolution's full-size output nor the
// unfolded patches are written: each window's entries are computed for four kernels at once, compared and dropped,
// from each image copied once into a zero-bordered buffer (border3).
static ffi::Error ConvPool(ffi::Buffer<ffi::F64> x, ffi::Buffer<ffi::F64> k, ffi::ResultBuffer<ffi::F64> y,
                           ffi::ResultBuffer<ffi::S32> where, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                           int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t ph,
                           int64_t pw) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto dx = x.dimensions(), dk = k.dimensions(), dy = y->dimensions();
  const Pooled p{dk[0], dx[0], dk[1], dk[2], dx[2], dx[3], dx[4], dy[3], dy[4]};
  if (kh != 3 || kw != 3 || dh != 1 || dw != 1)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "chaosgd_conv_pool: 3 x 3 kernels, no dilation");
  const Border e = border3(g, p, ph, pw);
  const std::vector<int64_t> offset = entry_offsets(g, ph, pw, e.PW, 1);
  const double* image = x.typed_data();
  const double* kernels = k.typed_data();
  const int64_t PW = e.PW, plane = e.PH * PW, pooled = p.Hp * p.Wp, taps = 9 * p.C;
  std::vector<int64_t> tap(taps);
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < 9; ++t) tap[c * 9 + t] = c * plane + t / 3 * PW + t % 3;
  // The kernels that read one image: every network's when the images are shared, else its network's O.
  const int64_t readers = p.Bx == 1 ? p.B * p.O : p.O, blocks = (readers + 3) / 4;
  std::vector<double> fours(p.Bx * blocks * taps * 4, 0.0);  // by (image batch, block, tap, kernel of the four)
  for (int64_t bx = 0; bx < p.Bx; ++bx)
    for (int64_t j = 0; j < readers; ++j)
      for (int64_t t = 0; t < taps; ++t)
        fours[((bx * blocks + j / 4) * taps + t) * 4 + j % 4] = kernels[((p.Bx == 1 ? 0 : bx * p.O) + j) * taps + t];
  void (*pass)(const ConvPoolPass&, Quad*) = p.C == 1 ? conv_pool_plain<9> : conv_pool_plain<0>;
#if defined(__x86_64__) && defined(__GNUC__)
  if (conv_pool_uses_avx()) pass = p.C == 1 ? conv_pool_avx<9> : conv_pool_avx<0>;
#endif
  parallel_for(p.Bx * p.n, [&](int64_t first, int64_t last) {
    std::vector<double> padded(p.C * plane, 0.0);  // (the border stays zero; the inside is each image in turn)
    std::vector<double> sums(4 * ph * pw);  // (four kernels' sums at each window entry)
    for (int64_t t = first; t < last; ++t) {
      const int64_t bx = t / p.n, img = t % p.n, bo0 = p.Bx == 1 ? 0 : bx * p.O;
      for (int64_t c = 0; c < p.C; ++c) {
        const double* in = image + ((bx * p.C + c) * p.n + img) * p.H * p.W;
        for (int64_t h = 0; h < p.H; ++h)
          std::memcpy(padded.data() + c * plane + (h + e.top) * PW + e.left, in + h * p.W, p.W * sizeof(double));
      }
      const ConvPoolPass a{padded.data() + (e.top - g.pt) * PW + (e.left - g.pl),
                           fours.data() + bx * blocks * taps * 4, offset.data(), tap.data(),
                           y->typed_data() + (bo0 * p.n + img) * pooled,
                           where->typed_data() + (bo0 * p.n + img) * pooled, p.Hp, p.Wp, ph * g.sh * PW,
                           pw * g.sw, ph * pw, readers, p.n * pooled, taps};
      pass(a, reinterpret_cast<Quad*>(sums.data()));
    }
  });
  return ffi::Error::Success();
}

// Network b's kernels (O, C, taps) as (O, taps, C): a tap's channels side by side, as the images' derivative adds
// them.
static void channels_last(const double* kernels, int64_t b, int64_t O, int64_t C, int64_t taps, double* out) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t) out[(o * taps + t) * C + c] = kernels[((b * O + o) * C + c) * taps + t];
}

// to[c] += v * tap[c] for the C channels of one tap, in fours (vectorised at -O2).
static inline void add_tap(double* __restrict to, const double* __restrict tap, double v, int64_t C) {
  const int64_t fours = C - C % 4;
  for (int64_t c = 0; c < fours; c += 4) {
    to[c] += v * tap[c], to[c + 1] += v * tap[c + 1];
    to[c + 2] += v * tap[c + 2], to[c + 3] += v * tap[c + 3];
  }
  for (int64_t c = fours; c < C; ++c) to[c] += v * tap[c];
}

// PooledConvT for 3 x 3 adjacent taps and several channels (a layer after the first): each image is copied once,
// channels last, into a zero-bordered buffer (border3), and every kernel that reads it adds each maximum's nine
// taps as runs of C channels (vector instructions). Images are summed in consecutive blocks, each block's sums kept
// apart and added in block order at the end: the same bits whatever the threads (the blocks follow the sizes alone:
// at most 64, fewer where their sums would pass 2^20 values, 8 MiB).
template <int64_t Channels>  // 0: as many as p.C says; else p.C, known to the compiler (loops unrolled)
static void PooledConvTC(const Geometry& g, const Pooled& p, int64_t ph, int64_t pw, const double* image,
                         const double* cotangent, const int32_t* at, double* dst) {
  const Border e = border3(g, p, ph, pw);
  const int64_t C = Channels ? Channels : p.C, taps = 9 * C, plane = p.H * p.W;
  const std::vector<int64_t> offset = entry_offsets(g, ph, pw, e.PW, C);
  const int64_t readers = p.Bx == 1 ? p.B * p.O : p.O;
  const int64_t each = std::max<int64_t>(1, p.Bx * readers * taps);  // (values a block's sums take)
  const int64_t parts = std::min<int64_t>({p.n, 64, std::max<int64_t>(1, (int64_t(1) << 20) / each)});
  std::vector<double> sums(p.Bx * parts * readers * taps);  // by (image batch, block of images, reader, tap)
  parallel_for(p.Bx * parts, [&](int64_t first, int64_t last) {
    std::vector<double> padded(e.PH * e.PW * C, 0.0);  // (PH, PW, C); the border stays zero
    const double* origin = padded.data() + ((e.top - g.pt) * e.PW + (e.left - g.pl)) * C;  // tap (0, 0), window 0
    for (int64_t item = first; item < last; ++item) {
      const int64_t bx = item / parts, part = item % parts;
      double* mine = sums.data() + item * readers * taps;
      std::fill(mine, mine + readers * taps, 0.0);
      for (int64_t img = part * p.n / parts; img < (part + 1) * p.n / parts; ++img) {
        for (int64_t c = 0; c < C; ++c)
          for (int64_t h = 0; h < p.H; ++h) {
            const double* from = image + ((bx * C + c) * p.n + img) * plane + h * p.W;
            double* to = padded.data() + ((h + e.top) * e.PW + e.left) * C + c;
            for (int64_t w = 0; w < p.W; ++w) to[w * C] = from[w];
          }
        for (int64_t j = 0; j < readers; ++j) {
          const int64_t bo = (p.Bx == 1 ? 0 : bx * p.O) + j;
          const double* values = cotangent + (bo * p.n + img) * p.Hp * p.Wp;
          const int32_t* positions = at + (bo * p.n + img) * p.Hp * p.Wp;
          double* kernel = mine + j * taps;  // (i, j, c): a tap's channels side by side
          for (int64_t r = 0, q = 0; r < p.Hp; ++r) {
            const double* row = origin + r * ph * g.sh * e.PW * C;
            for (int64_t s = 0; s < p.Wp; ++s, ++q) {
              const double* corner = row + s * pw * g.sw * C + offset[positions[q]];
              const double v = values[q];
              for (int64_t i = 0; i < 3; ++i)
                for (int64_t t = 0; t < 3; ++t) add_tap(kernel + (i * 3 + t) * C, corner + (i * e.PW + t) * C, v, C);
            }
          }
        }
      }
    }
  });
  for (int64_t bx = 0; bx < p.Bx; ++bx)
    for (int64_t j = 0; j < readers; ++j) {
      double* out = dst + ((p.Bx == 1 ? 0 : bx * p.O) + j) * taps;  // (c, i, j)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < 9; ++t) {
          double total = 0.0;
          for (int64_t part = 0; part < parts; ++part)
            total += sums[((bx * parts + part) * readers + j) * taps + t * C + c];
          out[c * 9 + t] = total;
        }
    }
}

// The transpose of PooledConv in k: dk[b, o, c, i, j] = sum over images and windows of ct times the input under
// tap (i, j) of the window's maximum. Each (b, o) is summed by one thread.
static ffi::Error PooledConvT(ffi::Buffer<ffi::F64> x, ffi::Buffer<ffi::F64> ct, ffi::Buffer<ffi::S32> where,
                              ffi::ResultBuffer<ffi::F64> out, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                              int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t ph,
                              int64_t pw) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto dx = x.dimensions(), dc = ct.dimensions(), dk = out->dimensions();
  const Pooled p{dk[0], dx[0], dk[1], dk[2], dx[2], dx[3], dx[4], dc[3], dc[4]};
  const double* image = x.typed_data();
  const double* cotangent = ct.typed_data();
  const int32_t* at = where.typed_data();
  double* dst = out->typed_data();
  if (kh == 3 && kw == 3 && dh == 1 && dw == 1) {
    switch (p.C) {  // the usual widths with their loops unrolled (the paper's CNN's second layer: 8)
      case 1: PooledConvT3(g, p, ph, pw, image, cotangent, at, dst); break;
      case 4: PooledConvTC<4>(g, p, ph, pw, image, cotangent, at, dst); break;
      case 8: PooledConvTC<8>(g, p, ph, pw, image, cotangent, at, dst); break;
      case 16: PooledConvTC<16>(g, p, ph, pw, image, cotangent, at, dst); break;
      case 32: PooledConvTC<32>(g, p, ph, pw, image, cotangent, at, dst); break;
      default: PooledConvTC<0>(g, p, ph, pw, image, cotangent, at, dst);
    }
    return ffi::Error::Success();
  }
  parallel_for(p.B * p.O, [&](int64_t first, int64_t last) {
    std::vector<double> taps(p.C * kh * kw);
    for (int64_t bo = first; bo < last; ++bo) {
      const int64_t b = bo / p.O;
      std::fill(taps.begin(), taps.end(), 0.0);
      for (int64_t img = 0; img < p.n; ++img) {
        const double* in = image + ((p.Bx == 1 ? 0 : b) * p.C * p.n + img) * p.H * p.W;
        const double* values = cotangent + (bo * p.n + img) * p.Hp * p.Wp;
        const int32_t* positions = at + (bo * p.n + img) * p.Hp * p.Wp;
        for_each_maximum(g, p, ph, pw, positions, in,
                         [&](int64_t q, const double* from, int64_t top, int64_t left, bool inside) {
                           return taps_at<true>(g, p, from, top, left, inside, nullptr, taps.data(), values[q]);
                         });
      }
      std::copy(taps.begin(), taps.end(), dst + bo * p.C * kh * kw);
    }
  });
  return ffi::Error::Success();
}

// PooledConvX for 3 x 3 adjacent taps (any channels): as below, in a zero-bordered scratch image (border3), so that
// no tap is checked against the edges; the same sums in the same order, the border's discarded.
template <int64_t Channels>  // 0: as many as p.C says; else p.C, known to the compiler (loops unrolled)
static void PooledConvX3(const Geometry& g, const Pooled& p, int64_t ph, int64_t pw, const double* kernels,
                         const double* cotangent, const int32_t* at, double* dst) {
  const Border e = border3(g, p, ph, pw);
  const int64_t C = Channels ? Channels : p.C, plane = p.H * p.W, taps = C * 9;
  const std::vector<int64_t> offset = entry_offsets(g, ph, pw, e.PW, C);
  parallel_for(p.B * p.n, [&](int64_t first, int64_t last) {
    std::vector<double> scratch(e.PH * e.PW * C), reordered(p.O * taps);  // (PH, PW, C); kernels as (o, i, j, c)
    double* origin = scratch.data() + ((e.top - g.pt) * e.PW + (e.left - g.pl)) * C;  // tap (0, 0) of window 0
    int64_t reordered_for = -1;
    for (int64_t t = first; t < last; ++t) {
      const int64_t b = t / p.n, img = t % p.n;
      if (b != reordered_for) {
        channels_last(kernels, b, p.O, C, 9, reordered.data());
        reordered_for = b;
      }
      std::fill(scratch.begin(), scratch.end(), 0.0);
      for (int64_t o = 0; o < p.O; ++o) {
        const double* kernel = reordered.data() + o * taps;
        const int64_t window = ((b * p.O + o) * p.n + img) * p.Hp * p.Wp;
        const double* values = cotangent + window;
        const int32_t* positions = at + window;
        for (int64_t r = 0, q = 0; r < p.Hp; ++r) {
          double* row = origin + r * ph * g.sh * e.PW * C;
          for (int64_t s = 0; s < p.Wp; ++s, ++q) {
            double* corner = row + s * pw * g.sw * C + offset[positions[q]];
            const double v = values[q];
            for (int64_t i = 0; i < 3; ++i)
              for (int64_t j = 0; j < 3; ++j) add_tap(corner + (i * e.PW + j) * C, kernel + (i * 3 + j) * C, v, C);
          }
        }
      }
      double* planes = dst + (b * C * p.n + img) * plane;  // channel c of this image at c * n * plane
      for (int64_t c = 0; c < C; ++c)
        for (int64_t h = 0; h < p.H; ++h) {
          const double* from = scratch.data() + ((h + e.top) * e.PW + e.left) * C + c;
          double* to = planes + c * p.n * plane + h * p.W;
          for (int64_t w = 0; w < p.W; ++w) to[w] = from[w * C];
        }
    }
  });
}

// The transpose of PooledConv in x: dx[b, c, img] = the sum, over kernels o and windows, of ct times kernel (b, o)'s
// taps placed where they met the input at the window's maximum (each network b its own input). The input's
// derivative through a pooled convolution, from the pooled cotangents alone: without scattering them back to the
// convolution's size, a product of the kernels with all those mostly-zero columns, and folding the result. Each
// (b, image) is summed by one thread in a scratch image with the channels last (a maximum's taps then add
// contiguous runs of C: vector instructions), small enough for the cache, and then written out channels first.
static ffi::Error PooledConvX(ffi::Buffer<ffi::F64> k, ffi::Buffer<ffi::F64> ct, ffi::Buffer<ffi::S32> where,
                              ffi::ResultBuffer<ffi::F64> out, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                              int64_t pt, int64_t pl, int64_t dh, int64_t dw, int64_t ho, int64_t wo, int64_t ph,
                              int64_t pw) {
  const Geometry g{kh, kw, sh, sw, pt, pl, dh, dw, ho, wo};
  auto dk = k.dimensions(), dc = ct.dimensions(), dx = out->dimensions();
  const Pooled p{dk[0], dx[0], dk[1], dk[2], dx[2], dx[3], dx[4], dc[3], dc[4]};
  const int64_t C = p.C, plane = p.H * p.W, taps = C * kh * kw;
  const double* kernels = k.typed_data();
  const double* cotangent = ct.typed_data();
  const int32_t* at = where.typed_data();
  double* dst = out->typed_data();
  if (kh == 3 && kw == 3 && dh == 1 && dw == 1) {
    switch (p.C) {  // the usual widths with their loops unrolled (the paper's CNN's second layer: 8)
      case 4: PooledConvX3<4>(g, p, ph, pw, kernels, cotangent, at, dst); break;
      case 8: PooledConvX3<8>(g, p, ph, pw, kernels, cotangent, at, dst); break;
      case 16: PooledConvX3<16>(g, p, ph, pw, kernels, cotangent, at, dst); break;
      case 32: PooledConvX3<32>(g, p, ph, pw, kernels, cotangent, at, dst); break;
      default: PooledConvX3<0>(g, p, ph, pw, kernels, cotangent, at, dst);
    }
    return ffi::Error::Success();
  }
  parallel_for(p.B * p.n, [&](int64_t first, int64_t last) {
    std::vector<double> scratch(plane * C), reordered(p.O * taps);  // (H, W, C); network b's kernels as (o, i, j, c)
    int64_t reordered_for = -1;
    for (int64_t t = first; t < last; ++t) {
      const int64_t b = t / p.n, img = t % p.n;
      if (b != reordered_for) {
        channels_last(kernels, b, p.O, C, kh * kw, reordered.data());
        reordered_for = b;
      }
      std::fill(scratch.begin(), scratch.end(), 0.0);
      double* image = scratch.data();
      for (int64_t o = 0; o < p.O; ++o) {
        const double* kernel = reordered.data() + o * taps;
        const int64_t window = ((b * p.O + o) * p.n + img) * p.Hp * p.Wp;
        const double* values = cotangent + window;
        for_each_maximum(g, p, ph, pw, at + window, image,
                         [&](int64_t q, double*, int64_t top, int64_t left, bool inside) {
                           const double v = values[q];
                           for (int64_t i = 0; i < kh; ++i) {
                             const int64_t row = top + i * dh;
                             if (!inside && (row < 0 || row >= p.H)) continue;
                             for (int64_t j = 0; j < kw; ++j) {
                               const int64_t column = left + j * dw;
                               if (!inside && (column < 0 || column >= p.W)) continue;
                               add_tap(image + (row * p.W + column) * C, kernel + (i * kw + j) * C, v, C);
                             }
                           }
                         });
      }
      double* planes = dst + (b * C * p.n + img) * plane;  // channel c of this image at c * n * plane
      for (int64_t c = 0; c < C; ++c)
        for (int64_t e = 0; e < plane; ++e) planes[c * p.n * plane + e] = image[e * C + c];
    }
  });
  return ffi::Error::Success();
}

#define GEOMETRY                                                                                              \
  .Attr<int64_t>("kh").Attr<int64_t>("kw").Attr<int64_t>("sh").Attr<int64_t>("sw").Attr<int64_t>("pt")       \
      .Attr<int64_t>("pl").Attr<int64_t>("dh").Attr<int64_t>("dw").Attr<int64_t>("ho").Attr<int64_t>("wo")

XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_patches, Patches,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>() GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_fold, Fold,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>() GEOMETRY);
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pool, Pool,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw"));
// Gather and scatter take (values, positions of the maxima); the pooled convolution and its transpose take
// (image, kernels or cotangent, positions): one binding each pair.
#define VALUES_AT_MAXIMA                                                                                      \
  ffi::Ffi::Bind()                                                                                            \
      .Arg<ffi::Buffer<ffi::F64>>()                                                                           \
      .Arg<ffi::Buffer<ffi::S32>>()                                                                           \
      .Ret<ffi::Buffer<ffi::F64>>()                                                                           \
      .Attr<int64_t>("ph")                                                                                    \
      .Attr<int64_t>("pw")
#define IMAGE_AT_MAXIMA                                                                                       \
  ffi::Ffi::Bind()                                                                                            \
      .Arg<ffi::Buffer<ffi::F64>>()                                                                           \
      .Arg<ffi::Buffer<ffi::F64>>()                                                                           \
      .Arg<ffi::Buffer<ffi::S32>>()                                                                           \
      .Ret<ffi::Buffer<ffi::F64>>() GEOMETRY.Attr<int64_t>("ph")                                              \
      .Attr<int64_t>("pw")

XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pool_gather, PoolGather, VALUES_AT_MAXIMA);
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pool_scatter, PoolScatter, VALUES_AT_MAXIMA);
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pooled_conv, PooledConv, IMAGE_AT_MAXIMA);
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_conv_pool, ConvPool,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>() GEOMETRY.Attr<int64_t>("ph")
                                  .Attr<int64_t>("pw"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pooled_conv_t, PooledConvT, IMAGE_AT_MAXIMA);
// (kernels, cotangent, positions): the binding of the pair above, the kernels in the image's place.
XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_pooled_conv_x, PooledConvX, IMAGE_AT_MAXIMA);
