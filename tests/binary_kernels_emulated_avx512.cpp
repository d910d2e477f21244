// The AVX-512 variant's logic on a CPU without AVX-512 (tests/test_binary_kernels.py compiles and runs this
// file): bitserial_isa.h is compiled with QZ_ISA=2 against plain-C++ stand-ins of the intrinsics it uses
// (same semantics as Intel's definitions), and its outputs and integer dots must equal the portable and AVX2
// variants' bit for bit on random layers (binary/ternary weights; sign, unit and affine inputs; NCHW and
// channels-last; strides, padding, dilation, C and O not multiples of 8). Built with -mavx2: the AVX-512
// variant's byte kernel is the AVX2 one, inlined. On a CPU with AVX-512 VPOPCNTDQ the
// real instructions are checked by test_dots_exact_outputs_match_and_isas_identical.
#define QZ_OPAQUE(x, c) (void)(x)
#include "bitserial.cpp"
#include <cstdio>
#include <random>
namespace emu {
struct m512i { uint64_t v[8]; };
struct m256i { uint32_t v[8]; };
typedef uint16_t mask16;
static inline m512i setzero() { m512i r{}; return r; }
static inline m512i set1(long long x) { m512i r; for (auto& e : r.v) e = (uint64_t)x; return r; }
static inline m512i and_(m512i a, m512i b) { for (int i = 0; i < 8; ++i) a.v[i] &= b.v[i]; return a; }
static inline m512i add64(m512i a, m512i b) { for (int i = 0; i < 8; ++i) a.v[i] += b.v[i]; return a; }
static inline m512i popcnt(m512i a) { for (auto& e : a.v) e = __builtin_popcountll(e); return a; }
static inline m512i loadu(const void* p) { m512i r; std::memcpy(&r, p, 64); return r; }
static inline void store(void* p, m512i a) { std::memcpy(p, &a, 64); }
static inline m256i cvt(m512i a) { m256i r; for (int i = 0; i < 8; ++i) r.v[i] = (uint32_t)a.v[i]; return r; }
static inline void storeu256(m256i* p, m256i a) { std::memcpy(p, &a, 32); }
struct m512 { float v[16]; };
static inline m512 loadu_ps(const float* p) { m512 r; std::memcpy(&r, p, 64); return r; }
static inline m512 setzero_ps() { m512 r{}; return r; }
static inline mask16 cmp_nge(m512 a, m512 b, int) { mask16 k = 0; for (int i = 0; i < 16; ++i) k |= (uint16_t)(!(a.v[i] >= b.v[i]) << i); return k; }
#define __m512i m512i
#define __m256i m256i
#define __m512 m512
#define __mmask16 mask16
#define _mm512_setzero_si512 setzero
#define _mm512_set1_epi64 set1
#define _mm512_and_si512 and_
#define _mm512_add_epi64 add64
#define _mm512_popcnt_epi64 popcnt
#define _mm512_loadu_si512 loadu
#define _mm512_store_si512 store
#define _mm512_cvtepi64_epi32 cvt
#define _mm256_storeu_si256 storeu256
#define _mm512_loadu_ps loadu_ps
#define _mm512_setzero_ps setzero_ps
#define _mm512_cmp_ps_mask cmp_nge
#define QZ_ISA 2
#include "bitserial_isa.h"
#undef QZ_ISA
}
int main() {
  std::mt19937 rng(1);
  int fails = 0, cases = 0;
  struct G { int C, O, KH, KW, S, P, D, H, W; } geoms[] = {{32, 64, 3, 3, 1, 1, 1, 8, 8}, {20, 13, 5, 5, 2, 2, 1, 11, 9},
      {70, 8, 3, 3, 1, 3, 2, 7, 6}, {3, 9, 1, 1, 1, 0, 1, 5, 5}, {300, 40, 1, 1, 1, 0, 1, 1, 1}, {16, 24, 1, 5, 2, 2, 1, 1, 40}};
  for (auto g : geoms) for (int wk = 0; wk < 2; ++wk) for (int ik = 0; ik < 3; ++ik) for (int planes : {1, 3, 8}) {
    if (ik == QZ_IN_SIGN && planes != 1) continue;
    if (ik == QZ_IN_AFFINE && planes != 8) continue;
    qz_layer L{};
    L.C = g.C; L.KH = g.KH; L.KW = g.KW; L.SH = g.KH == 1 && g.H == 1 ? 1 : g.S; L.SW = g.S; L.PH = g.H == 1 ? 0 : g.P; L.PW = g.P;
    L.DH = g.H == 1 ? 1 : g.D; L.DW = g.D; L.in_kind = ik; L.planes = planes; L.prescale = 1.0f; L.levels = (float)((1 << planes) - 1);
    L.scale_in = 0.01f; L.zero_point = 37; L.qmin = 0; L.qmax = 255; L.pad_code = ik == QZ_IN_AFFINE ? 37 : 0; L.kmap = ik == QZ_IN_SIGN;
    L.O = g.O; L.w_kind = wk;
    int T = g.KH * g.KW, tps = g.D == 1 ? g.KW : 1, nseg = T / tps, Cb = (g.C + 7) / 8, sw = (tps * Cb + 7) / 8;
    int R = wk ? 2 * g.O : g.O, groups = (R + 7) / 8;
    std::vector<uint8_t> rows((size_t)R * T * g.C), onesr((size_t)T * g.C, 1);
    for (auto& b : rows) b = rng() & 1;
    if (wk) for (int o = 0; o < g.O; ++o) for (int i = 0; i < T * g.C; ++i) if (rows[(size_t)o * T * g.C + i]) rows[(size_t)(g.O + o) * T * g.C + i] = 0;
    std::vector<uint64_t> w((size_t)groups * nseg * sw * 8), ones8((size_t)nseg * sw * 8), ones(nseg * sw);
    qz_pack_weight(rows.data(), R, g.KH, g.KW, g.C, tps, sw, w.data());
    qz_pack_weight(onesr.data(), 1, g.KH, g.KW, g.C, tps, sw, ones8.data());
    for (int k = 0; k < nseg * sw; ++k) ones[k] = ones8[k * 8];
    std::vector<int32_t> vtap((size_t)T * g.O), vsum(g.O);
    std::vector<float> scale(g.O), bias(g.O), ps(g.O), ph(g.O);
    for (int o = 0; o < g.O; ++o) { scale[o] = 0.1f + (rng() % 100) / 100.0f; bias[o] = (int)(rng() % 200) / 50.0f - 2; ps[o] = 1.5f; ph[o] = -0.25f; }
    for (int t = 0; t < T; ++t) for (int o = 0; o < g.O; ++o) { int s = 0; for (int c = 0; c < g.C; ++c) { int a = rows[((size_t)o * T + t) * g.C + c];
      s += wk ? a - rows[((size_t)(g.O + o) * T + t) * g.C + c] : 1 - 2 * a; } vtap[(size_t)t * g.O + o] = s; vsum[o] += s; }
    L.groups = groups; L.nseg = nseg; L.seg_words = sw; L.taps_per_seg = tps; L.w = w.data(); L.vtap = vtap.data();
    L.vsum = vsum.data(); L.scale = scale.data(); L.bias = bias.data(); L.post_scale = ps.data(); L.post_shift = ph.data();
    int N = 2, OH = (g.H + 2 * L.PH - L.DH * (g.KH - 1) - 1) / L.SH + 1, OW = (g.W + 2 * L.PW - L.DW * (g.KW - 1) - 1) / L.SW + 1;
    std::vector<float> x((size_t)N * g.C * g.H * g.W);
    std::normal_distribution<float> nd(0.3f, 0.7f);
    for (auto& v : x) v = (rng() % 13 == 0) ? 0.0f : nd(rng);
    for (int layout = 0; layout < 2; ++layout) {  // NCHW and channels-last
      int64_t st[4];
      if (layout == 0) { st[0] = (int64_t)g.C * g.H * g.W; st[1] = (int64_t)g.H * g.W; st[2] = g.W; st[3] = 1; }
      else { st[0] = (int64_t)g.C * g.H * g.W; st[1] = 1; st[2] = (int64_t)g.W * g.C; st[3] = g.C; }
      size_t n_out = (size_t)N * OH * OW * g.O;
      std::vector<float> y0(n_out), y1(n_out); std::vector<int32_t> d0(n_out), d1(n_out);
      qz_portable::forward(&L, x.data(), st, N, g.H, g.W, OH, OW, y0.data(), d0.data());
      emu::forward(&L, x.data(), st, N, g.H, g.W, OH, OW, y1.data(), d1.data());
      ++cases;
      if (std::memcmp(y0.data(), y1.data(), n_out * 4) || std::memcmp(d0.data(), d1.data(), n_out * 4)) { ++fails; printf("FAIL C%d O%d k%dx%d wk%d ik%d planes%d layout%d\n", g.C, g.O, g.KH, g.KW, wk, ik, planes, layout); }
#if QZ_X86
      std::vector<float> y2(n_out); std::vector<int32_t> d2(n_out);
      qz_avx2::forward(&L, x.data(), st, N, g.H, g.W, OH, OW, y2.data(), d2.data());
      if (std::memcmp(y0.data(), y2.data(), n_out * 4) || std::memcmp(d0.data(), d2.data(), n_out * 4)) { ++fails; printf("AVX2 FAIL\n"); }
#endif
    }
  }
  (void)emu::peak_loop(1000);
  printf("%d cases, %d failures (emulated AVX-512 and AVX2 vs portable, bit-identical outputs and dots)\n", cases, fails);
  return fails != 0;
}
