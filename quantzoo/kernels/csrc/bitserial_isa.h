// One instruction-set variant of the bit-serial kernels. bitserial.cpp includes this file once per ISA, each
// time inside its own namespace and with QZ_ISA set: 0 portable C++ (any CPU), 1 AVX2, 2 AVX-512F+VPOPCNTDQ.
// Everything below is shared except popcount_tile() and peak_loop(); the float epilogue is the same source for
// every ISA and bitserial.cpp compiles with -ffp-contract=off, so all variants give bit-identical outputs.

// popcount_tile: out[m*ld + r] = sum over the window's words of popcount(x_m & w_r) for MR positions m (their
// window origins xs[m]) and the 8 weight rows r of one group (wg: [nseg*seg_words][8] words).
#if QZ_ISA == 2
static constexpr int MR = 8;

QZ_INLINE void popcount_tile(const uint8_t* const* xs, const int64_t* segoff, int nseg, int seg_words,
                          const uint64_t* wg, int32_t* out, int ld) {
  __m512i acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_si512();
  for (int s = 0; s < nseg; ++s) {
    const uint8_t* p[MR];
    for (int m = 0; m < MR; ++m) p[m] = xs[m] + segoff[s];
    for (int j = 0; j < seg_words; ++j) {
      const __m512i w = _mm512_loadu_si512((const void*)wg);
      wg += 8;
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        uint64_t v;
        std::memcpy(&v, p[m] + 8 * j, 8);
        const __m512i t = _mm512_and_si512(_mm512_set1_epi64((long long)v), w);
        acc[m] = _mm512_add_epi64(acc[m], _mm512_popcnt_epi64(t));
      }
    }
  }
  for (int m = 0; m < MR; ++m) _mm256_storeu_si256((__m256i*)(out + (int64_t)m * ld), _mm512_cvtepi64_epi32(acc[m]));
}

// The inner step of popcount_tile on registers only (no loads): 8 independent AND+VPOPCNTQ+ADD chains of 512
// bits. Returns a value that depends on every step so the compiler keeps them.
static uint64_t peak_loop(int64_t iters) {
  __m512i w = _mm512_set1_epi64(0x0123456789abcdefLL);
  __m512i x[MR], acc[MR];
  for (int m = 0; m < MR; ++m) {
    x[m] = _mm512_set1_epi64((long long)(0x9e3779b97f4a7c15ULL * (m + 1)));
    acc[m] = _mm512_setzero_si512();
  }
  for (int64_t i = 0; i < iters; ++i) {
    QZ_OPAQUE(w, "+v");
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_add_epi64(acc[m], _mm512_popcnt_epi64(_mm512_and_si512(x[m], w)));
  }
  __m512i s = acc[0];
  for (int m = 1; m < MR; ++m) s = _mm512_add_epi64(s, acc[m]);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512((void*)lanes, s);
  uint64_t total = 0;
  for (int r = 0; r < 8; ++r) total += lanes[r];
  return total;
}
static constexpr int64_t PEAK_BITS_PER_ITER = MR * 512;

// bit c of out = !(x[c] >= 0) (sign(0) = +1, NaN -> -1), 16 channels per compare
static void pack_signs(const float* x, int C, uint8_t* out) {
  int c = 0;
  for (; c + 16 <= C; c += 16) {
    const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + c), _mm512_setzero_ps(), _CMP_NGE_UQ);
    out[c >> 3] = (uint8_t)(k & 0xff);
    out[(c >> 3) + 1] = (uint8_t)(k >> 8);
  }
  for (; c < C; c += 8) {
    uint8_t byte = 0;
    for (int j = 0; j < 8 && c + j < C; ++j) byte |= (uint8_t)(!(x[c + j] >= 0.0f) << j);
    out[c >> 3] = byte;
  }
}

#elif QZ_ISA == 1
static constexpr int MR = 4;

// Byte counters: each step adds at most 8 per byte (two nibble look-ups of at most 4), so they are folded
// into 64-bit sums (VPSADBW) every 31 steps, before 31*8 = 248 could overflow past 255.
static constexpr int FLUSH_EVERY = 31;

static inline __m256i nibble_popcount(__m256i acc, __m256i t, __m256i lut, __m256i low) {
  acc = _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_and_si256(t, low)));
  return _mm256_add_epi8(acc, _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(t, 4), low)));
}

// tot[m][r] += the byte counters' 64-bit lane sums; the counters restart at 0
static inline void flush_counts(__m256i (*acc)[2], uint64_t (*tot)[8]) {
  const __m256i zero = _mm256_setzero_si256();
  for (int m = 0; m < MR; ++m)
    for (int h = 0; h < 2; ++h) {
      __m256i* t = (__m256i*)&tot[m][4 * h];
      _mm256_store_si256(t, _mm256_add_epi64(_mm256_load_si256(t), _mm256_sad_epu8(acc[m][h], zero)));
      acc[m][h] = zero;
    }
}

QZ_INLINE void popcount_tile(const uint8_t* const* xs, const int64_t* segoff, int nseg, int seg_words,
                          const uint64_t* wg, int32_t* out, int ld) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  alignas(32) uint64_t tot[MR][8];
  if (nseg * seg_words > FLUSH_EVERY) std::memset(tot, 0, sizeof(tot));
  __m256i acc[MR][2];
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = zero;
  int steps = 0;
  const bool one_flush = nseg * seg_words <= FLUSH_EVERY;  // the usual case: the counters never overflow
  for (int s = 0; s < nseg; ++s) {
    const uint8_t* p[MR];
    for (int m = 0; m < MR; ++m) p[m] = xs[m] + segoff[s];
    for (int j = 0; j < seg_words; ++j) {
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)wg);
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(wg + 4));
      wg += 8;
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        uint64_t v;
        std::memcpy(&v, p[m] + 8 * j, 8);
        const __m256i xb = _mm256_set1_epi64x((long long)v);
        acc[m][0] = nibble_popcount(acc[m][0], _mm256_and_si256(xb, w0), lut, low);
        acc[m][1] = nibble_popcount(acc[m][1], _mm256_and_si256(xb, w1), lut, low);
      }
      if (!one_flush && ++steps == FLUSH_EVERY) {
        flush_counts(acc, tot);
        steps = 0;
      }
    }
  }
  for (int m = 0; m < MR; ++m) {  // the low 32 bits of rows 0..7, in order
    __m256i q0 = _mm256_sad_epu8(acc[m][0], zero), q1 = _mm256_sad_epu8(acc[m][1], zero);
    if (!one_flush) {
      q0 = _mm256_add_epi64(q0, _mm256_load_si256((const __m256i*)&tot[m][0]));
      q1 = _mm256_add_epi64(q1, _mm256_load_si256((const __m256i*)&tot[m][4]));
    }
    const __m256 t0 = _mm256_castsi256_ps(q0);
    const __m256 t1 = _mm256_castsi256_ps(q1);
    const __m256i r = _mm256_permute4x64_epi64(_mm256_castps_si256(_mm256_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0))),
                                               _MM_SHUFFLE(3, 1, 2, 0));
    _mm256_storeu_si256((__m256i*)(out + (int64_t)m * ld), r);
  }
}

static uint64_t peak_loop(int64_t iters) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  const __m256i zero = _mm256_setzero_si256();
  __m256i w0 = _mm256_set1_epi64x(0x0123456789abcdefLL), w1 = _mm256_set1_epi64x(0x7edcba9876543210LL);
  __m256i x[MR], acc[MR][2];
  __m256i tot = zero;
  for (int m = 0; m < MR; ++m) {
    x[m] = _mm256_set1_epi64x((long long)(0x9e3779b97f4a7c15ULL * (m + 1)));
    acc[m][0] = acc[m][1] = zero;
  }
  int steps = 0;
  for (int64_t i = 0; i < iters; ++i) {
    QZ_OPAQUE(w0, "+x");
    QZ_OPAQUE(w1, "+x");
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
      acc[m][0] = nibble_popcount(acc[m][0], _mm256_and_si256(x[m], w0), lut, low);
      acc[m][1] = nibble_popcount(acc[m][1], _mm256_and_si256(x[m], w1), lut, low);
    }
    if (++steps == FLUSH_EVERY) {
      for (int m = 0; m < MR; ++m)
        for (int h = 0; h < 2; ++h) {
          tot = _mm256_add_epi64(tot, _mm256_sad_epu8(acc[m][h], zero));
          acc[m][h] = zero;
        }
      steps = 0;
    }
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256((__m256i*)lanes, tot);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
static constexpr int64_t PEAK_BITS_PER_ITER = MR * 2 * 256;

// bit c of out = !(x[c] >= 0) (sign(0) = +1, NaN -> -1), 8 channels per compare
static void pack_signs(const float* x, int C, uint8_t* out) {
  int c = 0;
  for (; c + 8 <= C; c += 8)
    out[c >> 3] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + c), _mm256_setzero_ps(), _CMP_NGE_UQ));
  if (c < C) {
    uint8_t byte = 0;
    for (int j = 0; c + j < C; ++j) byte |= (uint8_t)(!(x[c + j] >= 0.0f) << j);
    out[c >> 3] = byte;
  }
}

#else
static constexpr int MR = 4;

static inline int popcount64(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_popcountll(v);
#else
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
  return (int)((v * 0x0101010101010101ULL) >> 56);
#endif
}

QZ_INLINE void popcount_tile(const uint8_t* const* xs, const int64_t* segoff, int nseg, int seg_words,
                          const uint64_t* wg, int32_t* out, int ld) {
  int32_t acc[MR * 8] = {};
  for (int s = 0; s < nseg; ++s) {
    for (int j = 0; j < seg_words; ++j) {
      for (int m = 0; m < MR; ++m) {
        uint64_t v;
        std::memcpy(&v, xs[m] + segoff[s] + 8 * j, 8);
        for (int r = 0; r < 8; ++r) acc[m * 8 + r] += popcount64(v & wg[r]);
      }
      wg += 8;
    }
  }
  for (int m = 0; m < MR; ++m) std::memcpy(out + (int64_t)m * ld, &acc[m * 8], 8 * sizeof(int32_t));
}

static uint64_t peak_loop(int64_t iters) {
  uint64_t w[8], x[MR], acc = 0;
  for (int r = 0; r < 8; ++r) w[r] = 0x0123456789abcdefULL * (r + 3);
  for (int m = 0; m < MR; ++m) x[m] = 0x9e3779b97f4a7c15ULL * (m + 1);
  for (int64_t i = 0; i < iters; ++i) {
    QZ_OPAQUE(w[0], "+r");
    QZ_OPAQUE(w[1], "+r");
    for (int m = 0; m < MR; ++m)
      for (int r = 0; r < 8; ++r) acc += (uint64_t)popcount64(x[m] & w[r]);
  }
  return acc;
}
static constexpr int64_t PEAK_BITS_PER_ITER = MR * 8 * 64;

// bit c of out = !(x[c] >= 0) (sign(0) = +1, NaN -> -1)
static void pack_signs(const float* x, int C, uint8_t* out) {
  for (int c = 0; c < C; c += 8) {
    uint8_t byte = 0;
    for (int j = 0; j < 8 && c + j < C; ++j) byte |= (uint8_t)(!(x[c + j] >= 0.0f) << j);
    out[c >> 3] = byte;
  }
}
#endif

static inline int popcount_byte(uint8_t v) {
  v = (uint8_t)(v - ((v >> 1) & 0x55));
  v = (uint8_t)((v & 0x33) + ((v >> 2) & 0x33));
  return (v + (v >> 4)) & 0x0f;
}

// -- shared driver ----------------------------------------------------------------------------------------------
static inline uint8_t real_channel_mask(int C, int byte_index) {
  const int left = C - 8 * byte_index;
  return left >= 8 ? 0xff : (uint8_t)((1u << left) - 1u);
}

// The unsigned code of one input value (see qz_layer.in_kind). Codes are < 2^planes.
static inline int input_code(const qz_layer* L, float v) {
  if (L->in_kind == QZ_IN_SIGN) return !(v >= 0.0f);  // bit 1 = -1; sign(0) = +1, NaN -> -1 as torch.where(x >= 0)
  if (L->in_kind == QZ_IN_UNIT) {
    if (L->prescale != 1.0f) v = v * L->prescale;
    if (!(v >= 0.0f)) v = 0.0f;  // clamp(x, 0, 1); NaN -> 0
    if (v > 1.0f) v = 1.0f;
    return (int)std::nearbyint(v * L->levels);  // round half to even, as torch.round
  }
  // QZ_IN_AFFINE: clamp(nearbyint(x / S) + Z, qmin, qmax) - qmin, with 1/S in float32 as torch's fake-quantize
  float q = (float)L->zero_point + std::nearbyint(v * (1.0f / L->scale_in));
  if (!(q >= (float)L->qmin)) q = (float)L->qmin;
  if (q > (float)L->qmax) q = (float)L->qmax;
  return (int)q - L->qmin;
}

// mean |x| over C values, summed in 8 fixed interleaved chains (the same rounding in every ISA variant)
static inline float mean_abs(const float* px, int C) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int c = 0;
  for (; c + 8 <= C; c += 8)
    for (int j = 0; j < 8; ++j) part[j] += std::fabs(px[c + j]);
  for (int j = 0; c + j < C; ++j) part[j] += std::fabs(px[c + j]);
  const float s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  return s / (float)C;
}

// One image (element (c, h, w) at x[c*st[0] + h*st[1] + w*st[2]]) -> planes[P][Hp][Wp][Cb]: bit c%8 of byte c/8 of pixel (h, w) in plane b
// is bit b of the code of x[h][w][c]. Spatial padding holds the code of the value 0 (pad_code); for sign inputs
// (no such code) it holds +1 and the epilogue removes its contribution (border correction). With kmap, A[h][w]
// (padded with 0) is the mean |x| over channels, XNOR-Net's A (Rastegari et al. 2016, sec. 3.2).
static void pack_image(const qz_layer* L, const float* x, const int64_t* st, int H, int W, int Hp, int Wp, int Cb,
                       uint8_t* planes, float* A, float* gather) {
  const int C = L->C, P = L->planes;
  const int64_t plane_bytes = (int64_t)Hp * Wp * Cb;
  for (int b = 0; b < P; ++b) {
    const bool on = L->in_kind != QZ_IN_SIGN && ((L->pad_code >> b) & 1);
    uint8_t* base = planes + b * plane_bytes;
    for (int h = 0; h < Hp; ++h)
      for (int w = 0; w < Wp; ++w) {
        if (h >= L->PH && h < L->PH + H && w >= L->PW && w < L->PW + W) continue;
        uint8_t* dst = base + ((int64_t)h * Wp + w) * Cb;
        for (int cb = 0; cb < Cb; ++cb) dst[cb] = on ? real_channel_mask(C, cb) : 0;
      }
  }
  if (A) {
    for (int i = 0; i < Hp * Wp; ++i) A[i] = 0.0f;
  }
  for (int h = 0; h < H; ++h)
    for (int w = 0; w < W; ++w) {
      const float* px = x + h * st[1] + w * st[2];
      if (st[0] != 1) {  // channels not adjacent (e.g. NCHW): gather them first
        for (int c = 0; c < C; ++c) gather[c] = px[c * st[0]];
        px = gather;
      }
      const int64_t off = ((int64_t)(h + L->PH) * Wp + (w + L->PW)) * Cb;
      if (L->in_kind == QZ_IN_SIGN) {
        pack_signs(px, C, planes + off);
      } else {
        for (int b = 0; b < P; ++b)
          for (int cb = 0; cb < Cb; ++cb) planes[b * plane_bytes + off + cb] = 0;
        for (int c = 0; c < C; ++c) {
          const int q = input_code(L, px[c]);
          for (int b = 0; b < P; ++b)
            planes[b * plane_bytes + off + (c >> 3)] |= (uint8_t)(((q >> b) & 1) << (c & 7));
        }
      }
      if (A) A[(int64_t)(h + L->PH) * Wp + (w + L->PW)] = mean_abs(px, C);
    }
}


// -- byte codes: unsigned 8-bit (or fewer) codes times int8 weights (binary/ternary values) -------------------
// i8_tile: out[m*ld + r] = sum over the window of x_m[k] * w_r[k] (x unsigned bytes, w signed bytes in -1..1)
// for I8_MR positions and I8_NR weight rows (row r at wr + r*wstride, [nseg][seg_vecs*32] bytes).
#if QZ_ISA == 1
static constexpr int I8_MR = 2, I8_NR = 4;  // 8 counters + 2 inputs + 1 weight + 1 product: no register spills
// int16 counters: one VPMADDUBSW lane is x*w + x*w with |w| <= 1, at most 510, so 64 steps stay below 32767
static constexpr int I8_FLUSH_EVERY = 64;

static inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

QZ_INLINE void i8_tile(const uint8_t* const* xs, const int64_t* segoff, int nseg, int seg_vecs, const int8_t* wr,
                       int64_t wstride, int32_t* out, int ld) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[I8_MR][I8_NR];
  alignas(32) int32_t tot[I8_MR][I8_NR][8];  // only for windows of more than I8_FLUSH_EVERY vectors
  const bool one_flush = nseg * seg_vecs <= I8_FLUSH_EVERY;
  if (!one_flush) std::memset(tot, 0, sizeof(tot));
  for (int m = 0; m < I8_MR; ++m)
    for (int r = 0; r < I8_NR; ++r) acc[m][r] = _mm256_setzero_si256();
  int steps = 0;
  for (int s = 0; s < nseg; ++s) {
    const uint8_t* p0 = xs[0] + segoff[s];
    const uint8_t* p1 = xs[1] + segoff[s];
    const int8_t* w = wr + (int64_t)s * seg_vecs * 32;
    for (int j = 0; j < seg_vecs; ++j) {
      const __m256i x0 = _mm256_loadu_si256((const __m256i*)(p0 + 32 * j));
      const __m256i x1 = _mm256_loadu_si256((const __m256i*)(p1 + 32 * j));
#pragma GCC unroll 4
      for (int r = 0; r < I8_NR; ++r) {
        const __m256i wv = _mm256_loadu_si256((const __m256i*)(w + r * wstride + 32 * j));
        acc[0][r] = _mm256_add_epi16(acc[0][r], _mm256_maddubs_epi16(x0, wv));
        acc[1][r] = _mm256_add_epi16(acc[1][r], _mm256_maddubs_epi16(x1, wv));
      }
      if (!one_flush && ++steps == I8_FLUSH_EVERY) {
        for (int m = 0; m < I8_MR; ++m)
          for (int r = 0; r < I8_NR; ++r) {
            __m256i* t = (__m256i*)tot[m][r];
            _mm256_store_si256(t, _mm256_add_epi32(_mm256_load_si256(t), _mm256_madd_epi16(acc[m][r], ones)));
            acc[m][r] = _mm256_setzero_si256();
          }
        steps = 0;
      }
    }
  }
  for (int m = 0; m < I8_MR; ++m)
    for (int r = 0; r < I8_NR; ++r) {
      __m256i v = _mm256_madd_epi16(acc[m][r], ones);
      if (!one_flush) v = _mm256_add_epi32(v, _mm256_load_si256((const __m256i*)tot[m][r]));
      out[m * ld + r] = hsum_epi32(v);
    }
}

// codes of 8 values at once, exactly as input_code: the same float operations, NaN to the lower clamp
static inline __m256i codes8(const qz_layer* L, __m256 v) {
  __m256 q;
  if (L->in_kind == QZ_IN_UNIT) {
    if (L->prescale != 1.0f) v = _mm256_mul_ps(v, _mm256_set1_ps(L->prescale));
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));  // max(NaN, 0) = 0
    q = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(L->levels)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvttps_epi32(q);
  }
  q = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.0f / L->scale_in)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm256_add_ps(_mm256_set1_ps((float)L->zero_point), q);
  q = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps((float)L->qmin)), _mm256_set1_ps((float)L->qmax));
  return _mm256_sub_epi32(_mm256_cvttps_epi32(q), _mm256_set1_epi32(L->qmin));
}

// dst[c] = input_code(x[c]) for the C values of one pixel, 32 at a time
static inline void pixel_codes(const qz_layer* L, const float* x, int C, uint8_t* dst) {
  int c = 0;
  for (; c + 32 <= C; c += 32) {
    const __m256i a = codes8(L, _mm256_loadu_ps(x + c)), b = codes8(L, _mm256_loadu_ps(x + c + 8));
    const __m256i e = codes8(L, _mm256_loadu_ps(x + c + 16)), f = codes8(L, _mm256_loadu_ps(x + c + 24));
    // codes are 0..255: pack 32 -> 16 -> 8 bits (per 128-bit lane), then undo the lane interleave
    const __m256i ab = _mm256_packus_epi32(a, b), ef = _mm256_packus_epi32(e, f);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, ef), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)(dst + c), bytes);
  }
  for (; c < C; ++c) dst[c] = (uint8_t)input_code(L, x[c]);
}
#elif QZ_ISA == 2
// AVX-512 machines run the AVX2 byte tile and code packer (every AVX-512 CPU has AVX2)
using qz_avx2::I8_MR;
using qz_avx2::I8_NR;
using qz_avx2::i8_tile;
using qz_avx2::pixel_codes;
#else
static inline void pixel_codes(const qz_layer* L, const float* x, int C, uint8_t* dst) {
  for (int c = 0; c < C; ++c) dst[c] = (uint8_t)input_code(L, x[c]);
}

static constexpr int I8_MR = 2, I8_NR = 4;

static void i8_tile(const uint8_t* const* xs, const int64_t* segoff, int nseg, int seg_vecs, const int8_t* wr,
                    int64_t wstride, int32_t* out, int ld) {
  for (int m = 0; m < I8_MR; ++m)
    for (int r = 0; r < I8_NR; ++r) {
      int32_t acc = 0;
      for (int s = 0; s < nseg; ++s) {
        const uint8_t* p = xs[m] + segoff[s];
        const int8_t* w = wr + r * wstride + (int64_t)s * seg_vecs * 32;
        for (int k = 0; k < seg_vecs * 32; ++k) acc += (int32_t)p[k] * (int32_t)w[k];
      }
      out[m * ld + r] = acc;
    }
}
#endif

// One image -> bytes[Hp][Wp][C]: the code of each value; padding holds pad_code (the code of 0).
static void pack_bytes(const qz_layer* L, const float* x, const int64_t* st, int H, int W, int Hp, int Wp,
                       uint8_t* img, float* gather) {
  const int C = L->C;
  for (int h = 0; h < Hp; ++h)
    for (int w = 0; w < Wp; ++w) {
      uint8_t* dst = img + ((int64_t)h * Wp + w) * C;
      if (h < L->PH || h >= L->PH + H || w < L->PW || w >= L->PW + W) {
        std::memset(dst, L->pad_code, C);
        continue;
      }
      const float* px = x + (h - L->PH) * st[1] + (w - L->PW) * st[2];
      if (st[0] != 1) {
        for (int c = 0; c < C; ++c) gather[c] = px[c * st[0]];
        px = gather;
      }
      pixel_codes(L, px, C, dst);
    }
}

static int forward_bits(const qz_layer* L, const float* x, const int64_t* strides, int N, int H, int W, int OH, int OW,
                   float* out, int32_t* dots) {
  const int C = L->C, O = L->O, P = L->planes, KH = L->KH, KW = L->KW, T = KH * KW;
  const int Cb = (C + 7) / 8;
  const int Hp = H + 2 * L->PH, Wp = W + 2 * L->PW;
  const int64_t plane_bytes = (int64_t)Hp * Wp * Cb;
  const int K = L->nseg * L->seg_words;
  const int ld = L->groups * 8;
  const bool binary = L->w_kind == QZ_W_BINARY, sign = L->in_kind == QZ_IN_SIGN;
  std::vector<uint8_t> planes((size_t)(P * plane_bytes + 64), 0);  // +64: word reads past a segment's end
  std::vector<float> A(L->kmap ? (size_t)Hp * Wp : 0);
  std::vector<int64_t> segoff(L->nseg);
  for (int s = 0; s < L->nseg; ++s) {
    const int kh = L->taps_per_seg == KW ? s : s / KW, kw = L->taps_per_seg == KW ? 0 : s % KW;
    segoff[s] = ((int64_t)kh * L->DH * Wp + (int64_t)kw * L->DW) * Cb;
  }
  const float box = 1.0f / (float)T;
  constexpr int MB = 8 * MR;  // output positions per block
  std::vector<int32_t> G((size_t)MB * ld), S(P > 1 ? (size_t)MB * O : 0);
  std::vector<float> gather(C);
  std::vector<float> zeros(O, 0.0f), units(O, 1.0f);
  std::vector<int32_t> zeros_i(O, 0), D(O);
  const float* bias = L->bias ? L->bias : zeros.data();
  const float* post_scale = L->post_scale ? L->post_scale : units.data();
  const float* post_shift = L->post_scale ? L->post_shift : zeros.data();
  const int npos = OH * OW;
  // binary weights: the all-ones row's count, popcount(x_b) over the window, from per-pixel counts
  std::vector<int32_t> pixel_count(binary ? (size_t)P * Hp * Wp : 0);
  std::vector<int64_t> tapoff((size_t)T);  // pixel offsets of the taps from the window origin
  for (int kh = 0; kh < KH; ++kh)
    for (int kw = 0; kw < KW; ++kw) tapoff[kh * KW + kw] = (int64_t)kh * L->DH * Wp + (int64_t)kw * L->DW;
  auto window_sum = [&](const int32_t* cnt, int oh, int ow) {
    const int32_t* base = cnt + (int64_t)oh * L->SH * Wp + (int64_t)ow * L->SW;
    int32_t c = 0;
    for (int t = 0; t < T; ++t) c += base[tapoff[t]];
    return c;
  };
  // sign inputs: the weights of the zero-padded taps of each border position, once for all images
  std::vector<int32_t> border_at(npos, -1), border_v;
  if (sign && (L->PH || L->PW))
    for (int p = 0; p < npos; ++p) {
      const int h0 = (p / OW) * L->SH - L->PH, w0 = (p % OW) * L->SW - L->PW;
      bool any = false;
      for (int kh = 0; kh < KH; ++kh)
        for (int kw = 0; kw < KW; ++kw) {
          const int h = h0 + kh * L->DH, w = w0 + kw * L->DW;
          if (h >= 0 && h < H && w >= 0 && w < W) continue;
          if (!any) {
            border_at[p] = (int)(border_v.size() / O);
            border_v.resize(border_v.size() + O, 0);
            any = true;
          }
          const int32_t* vt = L->vtap + (int64_t)(kh * KW + kw) * O;
          int32_t* c = &border_v[(size_t)border_at[p] * O];
          for (int o = 0; o < O; ++o) c[o] += vt[o];
        }
    }
  for (int n = 0; n < N; ++n) {
    pack_image(L, x + n * strides[0], strides + 1, H, W, Hp, Wp, Cb, planes.data(), L->kmap ? A.data() : nullptr,
               gather.data());
    for (size_t i = 0; i < pixel_count.size(); ++i) {  // planes and pixels are laid out alike: i = b*Hp*Wp + pixel
      const uint8_t* px = planes.data() + i * Cb;
      int32_t c = 0;
      for (int cb = 0; cb < Cb; ++cb) {
#if defined(__GNUC__) || defined(__clang__)
        c += __builtin_popcount(px[cb]);
#else
        c += popcount_byte(px[cb]);
#endif
      }
      pixel_count[i] = c;
    }
    for (int p0 = 0; p0 < npos; p0 += MB) {
      const int mb = std::min(MB, npos - p0);
      int cnt[MB];  // binary weights: popcount of the window of plane b
      for (int b = 0; b < P; ++b) {
        const uint8_t* plane = planes.data() + b * plane_bytes;
        const uint8_t* xs[MB];
        for (int m = 0; m < MB; ++m) {
          const int p = p0 + std::min(m, mb - 1);  // a short block repeats its last position
          xs[m] = plane + ((int64_t)(p / OW) * L->SH * Wp + (int64_t)(p % OW) * L->SW) * Cb;
          if (binary) cnt[m] = window_sum(&pixel_count[(size_t)b * Hp * Wp], p / OW, p % OW);
        }
        for (int m0 = 0; m0 < mb; m0 += MR)
          for (int g = 0; g < L->groups; ++g)
            popcount_tile(xs + m0, segoff.data(), L->nseg, L->seg_words, L->w + (int64_t)g * K * 8,
                          &G[(size_t)m0 * ld + g * 8], ld);
        if (P == 1) break;  // the last pass reads G directly
        // binary v = 1 - 2 neg: sum x_b v = popcount(x_b) - 2 popcount(x_b & neg_o); ternary v = pos - neg
        const int32_t mul = 1 << b;
        for (int m = 0; m < mb; ++m) {
          const int32_t* g = &G[(size_t)m * ld];
          int32_t* sm = &S[(size_t)m * O];
          const int32_t c = binary ? cnt[m] : 0;
          if (b == 0) {
            if (binary) for (int o = 0; o < O; ++o) sm[o] = c - 2 * g[o];
            else for (int o = 0; o < O; ++o) sm[o] = g[o] - g[O + o];
          } else {
            if (binary) for (int o = 0; o < O; ++o) sm[o] += (c - 2 * g[o]) * mul;
            else for (int o = 0; o < O; ++o) sm[o] += (g[o] - g[O + o]) * mul;
          }
        }
      }
      for (int m = 0; m < mb; ++m) {
        const int p = p0 + m, oh = p / OW, ow = p % OW;
        // Sum x v over all taps: from G (one plane: combined here) or S. Then the integer d:
        //   sign inputs: sum over real taps of (1 - 2 bit) v = vsum - 2 S - (v over the zero-padded taps);
        //   codes q with value q - z (padding holds z): S - z vsum.
        const int32_t* g = &G[(size_t)m * ld];
        const int32_t* sm = &S[(size_t)m * O];
        const int32_t* corr = sign && border_at[p] >= 0 ? &border_v[(size_t)border_at[p] * O] : zeros_i.data();
        const int32_t c = binary ? cnt[m] : 0, z = sign ? 0 : L->pad_code;
        int32_t* d = &D[0];
        if (P == 1 && sign && binary)  // XNOR-Net / BNN: one pass
          for (int o = 0; o < O; ++o) d[o] = L->vsum[o] - 2 * (c - 2 * g[o]) - corr[o];
        else {
          if (P == 1 && binary)
            for (int o = 0; o < O; ++o) d[o] = c - 2 * g[o];
          else if (P == 1)
            for (int o = 0; o < O; ++o) d[o] = g[o] - g[O + o];
          else
            for (int o = 0; o < O; ++o) d[o] = sm[o];
          if (sign)
            for (int o = 0; o < O; ++o) d[o] = L->vsum[o] - 2 * d[o] - corr[o];
          else
            for (int o = 0; o < O; ++o) d[o] = d[o] - z * L->vsum[o];
        }
        if (dots) std::memcpy(dots + ((int64_t)n * npos + p) * O, d, sizeof(int32_t) * O);
        if (!out) continue;
        float k = 1.0f;
        if (L->kmap) {  // K = A convolved with the 1/(KH*KW) box at the layer's geometry (zero padding)
          k = 0.0f;
          const float* a = A.data() + (int64_t)oh * L->SH * Wp + (int64_t)ow * L->SW;
          for (int t = 0; t < T; ++t) k += a[tapoff[t]] * box;
        }
        // ((d * scale + bias) * K) * post_scale + post_shift, absent terms as 0 or 1 (x + 0 = x up to the sign
        // of a zero, x * 1 = x)
        float* y = out + ((int64_t)n * npos + p) * O;
        for (int o = 0; o < O; ++o) y[o] = (((float)d[o] * L->scale[o] + bias[o]) * k) * post_scale[o] + post_shift[o];
      }
    }
  }
  return 0;
}

// Unsigned codes as bytes against int8 weight values (L->bytes_mode): d = sum over all taps of q v - z vsum.
static int forward_bytes(const qz_layer* L, const float* x, const int64_t* strides, int N, int H, int W, int OH,
                         int OW, float* out, int32_t* dots) {
  const int C = L->C, O = L->O, KW = L->KW;
  const int Hp = H + 2 * L->PH, Wp = W + 2 * L->PW;
  const int64_t img_bytes = (int64_t)Hp * Wp * C;
  std::vector<uint8_t> img((size_t)img_bytes + 64, 0);  // +64: vector reads past a segment's end
  std::vector<int64_t> segoff(L->nseg);
  for (int s = 0; s < L->nseg; ++s) {
    const int kh = L->taps_per_seg == KW ? s : s / KW, kw = L->taps_per_seg == KW ? 0 : s % KW;
    segoff[s] = ((int64_t)kh * L->DH * Wp + (int64_t)kw * L->DW) * C;
  }
  const int rows = (O + I8_NR - 1) / I8_NR * I8_NR;
  const int64_t wstride = (int64_t)L->nseg * L->seg_vecs * 32;
  constexpr int MB = 8 * I8_MR;
  std::vector<int32_t> S((size_t)MB * rows), D(O);
  std::vector<float> gather(C), zeros(O, 0.0f), units(O, 1.0f);
  const float* bias = L->bias ? L->bias : zeros.data();
  const float* post_scale = L->post_scale ? L->post_scale : units.data();
  const float* post_shift = L->post_scale ? L->post_shift : zeros.data();
  const int npos = OH * OW;
  for (int n = 0; n < N; ++n) {
    pack_bytes(L, x + n * strides[0], strides + 1, H, W, Hp, Wp, img.data(), gather.data());
    for (int p0 = 0; p0 < npos; p0 += MB) {
      const int mb = std::min(MB, npos - p0);
      const uint8_t* xs[MB];
      for (int m = 0; m < MB; ++m) {
        const int p = p0 + std::min(m, mb - 1);
        xs[m] = img.data() + ((int64_t)(p / OW) * L->SH * Wp + (int64_t)(p % OW) * L->SW) * C;
      }
      for (int m0 = 0; m0 < mb; m0 += I8_MR)
        for (int r0 = 0; r0 < rows; r0 += I8_NR)
          i8_tile(xs + m0, segoff.data(), L->nseg, L->seg_vecs, L->wb + r0 * wstride, wstride,
                  &S[(size_t)m0 * rows + r0], rows);
      for (int m = 0; m < mb; ++m) {
        const int p = p0 + m;
        const int32_t* sm = &S[(size_t)m * rows];
        int32_t* d = D.data();
        for (int o = 0; o < O; ++o) d[o] = sm[o] - L->pad_code * L->vsum[o];
        if (dots) std::memcpy(dots + ((int64_t)n * npos + p) * O, d, sizeof(int32_t) * O);
        if (!out) continue;
        float* y = out + ((int64_t)n * npos + p) * O;
        for (int o = 0; o < O; ++o) y[o] = ((float)d[o] * L->scale[o] + bias[o]) * post_scale[o] + post_shift[o];
      }
    }
  }
  return 0;
}

static int forward(const qz_layer* L, const float* x, const int64_t* strides, int N, int H, int W, int OH, int OW,
                   float* out, int32_t* dots) {
  return L->bytes_mode ? forward_bytes(L, x, strides, N, H, W, OH, OW, out, dots)
                       : forward_bits(L, x, strides, N, H, W, OH, OW, out, dots);
}
