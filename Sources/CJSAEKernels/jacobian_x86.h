// 8×8 transpose shared by the AVX2 and AVX-512 paths (each includes it under
// its own KATTR, since an inlined intrinsic needs its caller's target).
#include <immintrin.h>

// LT[r][q] = Lrows[q][r0 + r] · phi[r0 + r] for r < w, q < k; whole 8×8
// squares by shuffles, the rest element by element.
static KATTR void KN(transpose)(float *LT, const float *const *Lrows, const float *phi, int64_t r0,
                                int64_t k, int64_t w, int64_t kq) {
    const int64_t k8 = k / 8 * 8, w8 = w / 8 * 8;
    for (int64_t q = 0; q < k8; q += 8)
        for (int64_t r = 0; r < w8; r += 8) {
            const int64_t o = r0 + r;
            __m256 a0 = _mm256_loadu_ps(Lrows[q + 0] + o), a1 = _mm256_loadu_ps(Lrows[q + 1] + o);
            __m256 a2 = _mm256_loadu_ps(Lrows[q + 2] + o), a3 = _mm256_loadu_ps(Lrows[q + 3] + o);
            __m256 a4 = _mm256_loadu_ps(Lrows[q + 4] + o), a5 = _mm256_loadu_ps(Lrows[q + 5] + o);
            __m256 a6 = _mm256_loadu_ps(Lrows[q + 6] + o), a7 = _mm256_loadu_ps(Lrows[q + 7] + o);
            __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
            __m256 t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
            __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
            __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
            float *d = LT + r * kq + q;
            _mm256_storeu_ps(d + 0 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_broadcast_ss(phi + o + 0)));
            _mm256_storeu_ps(d + 1 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u1, u5, 0x20), _mm256_broadcast_ss(phi + o + 1)));
            _mm256_storeu_ps(d + 2 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u2, u6, 0x20), _mm256_broadcast_ss(phi + o + 2)));
            _mm256_storeu_ps(d + 3 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u3, u7, 0x20), _mm256_broadcast_ss(phi + o + 3)));
            _mm256_storeu_ps(d + 4 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u0, u4, 0x31), _mm256_broadcast_ss(phi + o + 4)));
            _mm256_storeu_ps(d + 5 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u1, u5, 0x31), _mm256_broadcast_ss(phi + o + 5)));
            _mm256_storeu_ps(d + 6 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u2, u6, 0x31), _mm256_broadcast_ss(phi + o + 6)));
            _mm256_storeu_ps(d + 7 * kq, _mm256_mul_ps(_mm256_permute2f128_ps(u3, u7, 0x31), _mm256_broadcast_ss(phi + o + 7)));
        }
    // Ragged edges: rows q ≥ k8 for all r, and columns r ≥ w8 for q < k8.
    for (int64_t q = 0; q < k; q++)
        for (int64_t r = (q < k8 ? w8 : 0); r < w; r++) LT[r * kq + q] = Lrows[q][r0 + r] * phi[r0 + r];
}
#define TRANSPOSE_BLOCK
