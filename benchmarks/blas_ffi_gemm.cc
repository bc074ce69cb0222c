// An XLA FFI custom call that runs a float64 GEMM through a BLAS dgemm whose address it is given (scipy's
// OpenBLAS, from scipy.linalg.cython_blas): a prototype of the route to the CPU limit, timed by blas_routes.py.
#include <cstdint>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
typedef void (*dgemm_t)(char*, char*, int*, int*, int*, double*, double*, int*, double*, int*, double*, double*, int*);

// C (m x n, row-major) = op(A) @ B; A is m x k row-major, or k x m with trans_a (then op(A) = A^T).
static ffi::Error Gemm(ffi::Buffer<ffi::F64> a, ffi::Buffer<ffi::F64> b, ffi::ResultBuffer<ffi::F64> c,
                       int64_t fn, bool trans_a) {
  auto ad = a.dimensions(), bd = b.dimensions();
  int k = bd[0], n = bd[1];
  int m = trans_a ? ad[1] : ad[0];
  double one = 1.0, zero = 0.0;
  char nt = 'N', tt = 'T';
  dgemm_t dgemm = reinterpret_cast<dgemm_t>(fn);
  // Column-major view: C^T (n x m) = B^T (n x k) . op(A)^T (k x m)
  int lda = trans_a ? m : k;
  dgemm(&nt, trans_a ? &tt : &nt, &n, &m, &k, &one, b.typed_data(), &n, a.typed_data(), &lda, &zero,
        c->typed_data(), &n);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(BlasGemm, Gemm,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F64>>().Arg<ffi::Buffer<ffi::F64>>().Ret<ffi::Buffer<ffi::F64>>()
        .Attr<int64_t>("fn").Attr<bool>("trans_a"));
