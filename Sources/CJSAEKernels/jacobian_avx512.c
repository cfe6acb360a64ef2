// AVX-512F path, 16 floats a vector; target("avx512f,avx2,fma") on every
// function (the 8×8 packing transpose is AVX2). Selected only where
// __builtin_cpu_supports("avx512f") holds.
#if defined(__x86_64__)
#include "jacobian_internal.h"
#include <immintrin.h>

#define KN(name) name##_avx512
#define KATTR __attribute__((target("avx512f,avx2,fma")))
#define VEC __m512
#define VL 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VSTORE_N(p, v, n) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (n)) - 1u), (v))
// 32 zmm registers, and the broadcast folds into the FMA as a memory
// operand. Forward 2×8: 16 accumulators (32 q × 8 p). Backward 8×2: 16
// accumulators, two vectors of r (a block is 4).
#define FWD_MV 2
#define FWD_NP 8
#define FWD_CASES JSAE_ROW8(FC, 1) JSAE_ROW8(FC, 2)
#define BWD_BR 8
#define BWD_BV 2
#define BWD_CASES JSAE_ROW2(BC, 1) JSAE_ROW2(BC, 2) JSAE_ROW2(BC, 3) JSAE_ROW2(BC, 4) \
                  JSAE_ROW2(BC, 5) JSAE_ROW2(BC, 6) JSAE_ROW2(BC, 7) JSAE_ROW2(BC, 8)
#include "jacobian_x86.h"
#include "jacobian_template.h"
#endif
