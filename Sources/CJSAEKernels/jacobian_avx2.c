// AVX2 + FMA path, 8 floats a vector. Every function carries
// target("avx2,fma") itself, so the file needs no compiler flag and the
// dispatcher calls it only where __builtin_cpu_supports says it may.
#if defined(__x86_64__)
#include "jacobian_internal.h"
#include <immintrin.h>

#define KN(name) name##_avx2
#define KATTR __attribute__((target("avx2,fma")))
#define VEC __m256
#define VL 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VSTORE_N(p, v, n) \
    _mm256_maskstore_ps((p), _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (v))
// 16 ymm registers. Forward 2×6: 12 accumulators + 2 vectors of LT + 1
// broadcast = 15, and 8 loads per 12 FMAs (4×3 would need 17 registers: AVX2
// has no broadcast memory operand). Backward 6×2: 12 + 2 + 1 = 15, and two
// vectors of r per tile divide a block's 8 vectors evenly.
#define FWD_MV 2
#define FWD_NP 6
#define FWD_CASES JSAE_ROW6(FC, 1) JSAE_ROW6(FC, 2)
#define BWD_BR 6
#define BWD_BV 2
#define BWD_CASES JSAE_ROW2(BC, 1) JSAE_ROW2(BC, 2) JSAE_ROW2(BC, 3) JSAE_ROW2(BC, 4) JSAE_ROW2(BC, 5) JSAE_ROW2(BC, 6)
#include "jacobian_x86.h"
#include "jacobian_template.h"
#endif
