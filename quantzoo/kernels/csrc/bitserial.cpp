// Bit-serial binary/ternary convolution and GEMM for quantzoo's packed backend (quantzoo/kernels/__init__.py
// explains the maths; plain C ABI, called through ctypes, no torch headers so that it compiles in seconds).
//
// A layer computes, for every output position p and output channel o, the exact integer
//     d[p][o] = sum over the window's real taps and channels of u(x) * v(w)
// with u the integer value of an input code (sign inputs: +-1; unsigned k-bit codes: q - pad_code) and v the
// weight's integer value (+-1 or -1/0/+1), and then the float epilogue
//     y = ((float)d * scale[o] + bias[o]) * K[p]  (then * post_scale[o] + post_shift[o], each step optional).
// Every integer sum is one AND-popcount GEMM over bit planes: x is stored as P planes of bits (bit b of each
// code), the weight as rows of bits (binary: neg_o, and one shared all-ones row — the window's popcount,
// summed from per-pixel counts; ternary: pos_o and neg_o), and
//     sum x_b * v = popcount(x_b & ones) - 2 popcount(x_b & neg_o)   (binary, v = 1 - 2 neg)
//     sum x_b * v = popcount(x_b & pos_o) - popcount(x_b & neg_o)     (ternary, v = pos - neg)
// For sign inputs (bit = 1 where x < 0, u = 1 - 2 bit) this is XNOR-Net's xnor-popcount: popcount(x ^ w) =
// popcount(x) + popcount(w) - 2 popcount(x & w); the AND form lets padding bits past a segment be masked by
// the weight's zeros, so pixels are packed at byte granularity (C = 32 uses 32 bits, not a 64-bit word).
// Codes of several bits against ternary weights (TWN W2A8) would need planes x 2 popcounts per word; there
// (bytes_mode) the codes stay bytes and VPMADDUBSW multiplies them by the int8 weight values instead.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define QZ_X86 1
#else
#define QZ_X86 0
#endif

#define QZ_ABI_VERSION 5

#if defined(__GNUC__) || defined(__clang__)
#define QZ_INLINE static inline __attribute__((always_inline))
#else
#define QZ_INLINE static inline
#endif

// Makes the compiler forget what it knows of x (the peak loops must not hoist their work out of the loop).
#ifndef QZ_OPAQUE
#define QZ_OPAQUE(x, constraint) __asm__ volatile("" : constraint(x))
#endif

enum { QZ_IN_SIGN = 0, QZ_IN_UNIT = 1, QZ_IN_AFFINE = 2 };
enum { QZ_W_BINARY = 0, QZ_W_TERNARY = 1 };
enum { QZ_ISA_PORTABLE = 0, QZ_ISA_AVX2 = 1, QZ_ISA_AVX512 = 2 };

extern "C" {
// Everything a layer needs, filled once by the Python side (quantzoo/kernels/build.py mirrors it).
struct qz_layer {
  int32_t C, KH, KW, SH, SW, PH, PW, DH, DW;
  // input codes: QZ_IN_SIGN (bit = x < 0), QZ_IN_UNIT (DoReFa: q = round(clamp(prescale*x, 0, 1) * levels)),
  // QZ_IN_AFFINE (q = clamp(round(x / scale_in) + zero_point, qmin, qmax) - qmin)
  int32_t in_kind, planes;
  float prescale, levels, scale_in;
  int32_t zero_point, qmin, qmax;
  int32_t pad_code;  // the code whose value is 0 (padding holds it); 0 for sign inputs (border correction)
  int32_t kmap;      // 1: multiply by XNOR-Net's K (mean |x| over channels, box-filtered at the conv geometry)
  int32_t O, w_kind;
  int32_t groups, nseg, seg_words, taps_per_seg;  // rows: binary neg_o; ternary pos_o then neg_o
  int32_t bytes_mode, seg_vecs;  // 1: codes as bytes times int8 weights (wb), segments of seg_vecs*32 bytes
  const uint64_t* w;     // [groups][nseg * seg_words][8]: word k of rows 8g..8g+7 side by side
  const int8_t* wb;      // bytes mode: [ceil(O/4)*4][nseg][seg_vecs*32] weight values, zero-filled
  const int32_t* vtap;   // [KH*KW][O]: sum over channels of v at each tap (border correction)
  const int32_t* vsum; // [O]: sum of v over the whole filter
  const float* scale;  // [O]
  const float* bias;   // [O] or null
  const float* post_scale;
  const float* post_shift;  // [O] or null (both)
};
}

namespace qz_portable {
#define QZ_ISA 0
#include "bitserial_isa.h"
#undef QZ_ISA
}  // namespace qz_portable

#if QZ_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,popcnt")
#endif
namespace qz_avx2 {
#define QZ_ISA 1
#include "bitserial_isa.h"
#undef QZ_ISA
}  // namespace qz_avx2
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,popcnt,avx512f,avx512vpopcntdq"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,popcnt,avx512f,avx512vpopcntdq")
#endif
namespace qz_avx512 {
#define QZ_ISA 2
#include "bitserial_isa.h"
#undef QZ_ISA
}  // namespace qz_avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

extern "C" {

int qz_abi_version() { return QZ_ABI_VERSION; }

// Bit i set: ISA i can run here (0 portable, 1 AVX2, 2 AVX-512F + VPOPCNTDQ).
int qz_cpu_isas() {
  int mask = 1 << QZ_ISA_PORTABLE;
#if QZ_X86 && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) mask |= 1 << QZ_ISA_AVX2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vpopcntdq"))
    mask |= 1 << QZ_ISA_AVX512;
#endif
  return mask;
}

// Weight rows planes[R][KH][KW][C] (0/1 bytes) -> the kernel layout of qz_layer.w. A segment is the run of taps
// that is contiguous in the packed input (the whole kernel row when DW == 1, else one tap): its bytes are the
// taps' channel bytes back to back, zero-filled to seg_words 64-bit words. Rows are padded to a multiple of 8
// with zero rows.
void qz_pack_weight(const uint8_t* planes, int R, int KH, int KW, int C, int taps_per_seg, int seg_words,
                    uint64_t* out) {
  const int Cb = (C + 7) / 8, T = KH * KW, nseg = T / taps_per_seg, K = nseg * seg_words;
  const int groups = (R + 7) / 8;
  std::memset(out, 0, sizeof(uint64_t) * (size_t)groups * K * 8);
  std::vector<uint8_t> seg((size_t)seg_words * 8);
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < nseg; ++s) {
      std::fill(seg.begin(), seg.end(), 0);
      for (int t = 0; t < taps_per_seg; ++t) {
        const uint8_t* src = planes + ((size_t)r * T + (size_t)s * taps_per_seg + t) * C;
        for (int c = 0; c < C; ++c)
          if (src[c]) seg[(size_t)t * Cb + (c >> 3)] |= (uint8_t)(1u << (c & 7));
      }
      for (int j = 0; j < seg_words; ++j) {
        uint64_t v;
        std::memcpy(&v, &seg[(size_t)j * 8], 8);
        out[((size_t)(r / 8) * K + (size_t)s * seg_words + j) * 8 + (r % 8)] = v;
      }
    }
}

// x: float32, element (n, c, h, w) at x[n*strides[0] + c*strides[1] + h*strides[2] + w*strides[3]] (any
// layout; channels-last, strides[1] == 1, packs fastest); out: [N][OH][OW][O] float32 or null; dots: the
// integer d, same shape, or null. Returns 0, or -1 when the ISA cannot run here.
int qz_forward(const qz_layer* L, int isa, const float* x, const int64_t* strides, int N, int H, int W, int OH,
               int OW, float* out, int32_t* dots) {
  if (!((qz_cpu_isas() >> isa) & 1)) return -1;
  switch (isa) {
#if QZ_X86
    case QZ_ISA_AVX512: return qz_avx512::forward(L, x, strides, N, H, W, OH, OW, out, dots);
    case QZ_ISA_AVX2: return qz_avx2::forward(L, x, strides, N, H, W, OH, OW, out, dots);
#endif
    case QZ_ISA_PORTABLE: return qz_portable::forward(L, x, strides, N, H, W, OH, OW, out, dots);
    default: return -1;
  }
}

// The kernel's inner step on registers only, `iters` times; *bits receives the AND-popcount bit pairs done.
uint64_t qz_peak(int isa, int64_t iters, int64_t* bits) {
  *bits = 0;
  if (!((qz_cpu_isas() >> isa) & 1)) return 0;
  switch (isa) {
#if QZ_X86
    case QZ_ISA_AVX512: *bits = iters * qz_avx512::PEAK_BITS_PER_ITER; return qz_avx512::peak_loop(iters);
    case QZ_ISA_AVX2: *bits = iters * qz_avx2::PEAK_BITS_PER_ITER; return qz_avx2::peak_loop(iters);
#endif
    default: *bits = iters * qz_portable::PEAK_BITS_PER_ITER; return qz_portable::peak_loop(iters);
  }
}

// 8 * iters dependent integer additions (1 cycle each on every x86 core since the P6): timing this gives
// the core clock, to turn a per-cycle throughput limit into one per second.
uint64_t qz_clock_loop(int64_t iters) {
  uint64_t v = 0;
  for (int64_t i = 0; i < iters; ++i) {
#if QZ_X86 && (defined(__GNUC__) || defined(__clang__))
    __asm__ volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        : "+r"(v));
#else
    v += 8;
#endif
  }
  return v;
}

}  // extern "C"
