// chaosgd's float64 matrix product as an XLA FFI custom call into the BLAS dgemm that scipy ships (OpenBLAS):
// XLA's own CPU product reaches about half of OpenBLAS's speed at the engine's shapes. Built by gemm.py at first
// use with the system's C++ compiler against jaxlib's FFI headers; gemm.py hands over dgemm's address once.
#include <cstdint>
#include <mutex>
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
typedef void (*dgemm_t)(const char*, const char*, const int*, const int*, const int*, const double*,
                        const double*, const int*, const double*, const int*, const double*, double*, const int*);

static dgemm_t dgemm = nullptr;
// One product at a time: XLA runs independent operations on several threads, and two products at once would each
// start OpenBLAS's threads on the same cores (the test set's small product then waited out the large one anyway).
static std::mutex one_at_a_time;

extern "C" void chaosgd_set_dgemm(void* address) { dgemm = reinterpret_cast<dgemm_t>(address); }

// C (m x n) = op(A) op(B), all row-major, op(X) = X^T where trans_x; or C[i] = op(A[i]) op(B[i]) for a leading
// batch axis of all three (networks that each have their own input, e.g. the second convolution of an ensemble):
// both handlers below are this function. gemm.py checks that every size fits in int.
static ffi::Error Gemm(ffi::Buffer<ffi::F64> a, ffi::Buffer<ffi::F64> b, ffi::ResultBuffer<ffi::F64> c,
                       bool trans_a, bool trans_b) {
  if (dgemm == nullptr) return ffi::Error(ffi::ErrorCode::kFailedPrecondition, "chaosgd: dgemm not set");
  auto ad = a.dimensions(), bd = b.dimensions();
  const size_t r = ad.size() - 2;  // the first matrix axis: 0, or 1 after the batch axis
  const int64_t batch = r ? ad[0] : 1;
  const int m = trans_a ? ad[r + 1] : ad[r], k = trans_a ? ad[r] : ad[r + 1], n = trans_b ? bd[r] : bd[r + 1];
  double* out = c->typed_data();
  if (m == 0 || n == 0 || batch == 0) return ffi::Error::Success();
  if (k == 0) {
    for (int64_t i = 0; i < batch * m * n; ++i) out[i] = 0.0;
    return ffi::Error::Success();
  }
  // BLAS is column-major, where a row-major matrix reads as its transpose: compute C^T = op(B)^T op(A)^T.
  const double one = 1.0, zero = 0.0;
  const int ldb = trans_b ? k : n, lda = trans_a ? m : k;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  for (int64_t i = 0; i < batch; ++i)
    dgemm(trans_b ? "T" : "N", trans_a ? "T" : "N", &n, &m, &k, &one, b.typed_data() + i * int64_t(k) * n, &ldb,
          a.typed_data() + i * int64_t(m) * k, &lda, &zero, out + i * int64_t(m) * n, &n);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_gemm_batched, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(chaosgd_gemm, Gemm,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<bool>("trans_a")
                                  .Attr<bool>("trans_b"));
