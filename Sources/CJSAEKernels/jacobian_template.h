// The per-token Jacobian kernel, written once and instantiated per
// instruction-set path: jacobian_portable.c, jacobian_avx2.c and
// jacobian_avx512.c each define the vector macros below and include this file.
// (Not a public header: it lives outside include/.) Dimension letters are those
// of include/CJSAEKernels.h.
//
// Required before inclusion:
//   KN(name)            the path's name for a function (name ## _avx2, …)
//   KATTR               attributes of every function (the target("…") of the path)
//   VEC, VL             vector type and its width in floats (VL divides 16)
//   VZERO(), VLOAD(p), VSTORE(p, v), VFMA(a, b, c) = a·b + c, VMUL(a, b),
//   VBCAST(p)           all lanes = *p
//   VSTORE_N(p, v, n)   store the first n lanes of v, 0 < n < VL
//   FWD_MV, FWD_NP      forward register tile: FWD_MV vectors of q × FWD_NP columns p
//   FWD_CASES           `FC(mv, np)` for every 1 ≤ mv ≤ FWD_MV, 1 ≤ np ≤ FWD_NP
//   BWD_BR, BWD_BV      backward register tile: BWD_BR output rows × BWD_BV vectors of r
//   BWD_CASES           `BC(br, bv)` for every 1 ≤ br ≤ BWD_BR, 1 ≤ bv ≤ BWD_BV
//   TRANSPOSE_BLOCK     optional: KN(transpose) is then provided by the path file
//
// Why this shape. J = L·Rᵀ contracts over r, the contiguous index of both
// gathered operands. A register-blocked outer-product kernel needs one
// operand with the *other* index contiguous, so per block of JSAE_RB values of
// r the L rows are transposed into LT [JSAE_RB, kq], scaled by phi on the way
// (LT[r][q] = L[q][r]·phi[r]: one multiply per element of L instead of one per
// product), while the rows of wd1 are read where they are, one scalar
// broadcast at a time. Each accumulator is then a vector of VL consecutive q
// at one p, the accumulation runs across all r without horizontal sums, and
// the only per-block overhead is the transpose and loading and storing the
// tile of JT (J transposed) once.
// So the forward copies nothing but LT: the gather is k + k row pointers.
// The backward's products dL = G·(wd1[K1] ⊙ phi) and dR = Gᵀ·L are outer
// products over the k rows; per block it copies the k + k rows' block
// (⊙ phi for R) into a 2·k·JSAE_RB buffer that stays in L1 (in place, the
// rows alias in L1, see below). The workspace is thus a few tens of KiB,
// not a packed copy of L and R, and no gathered byte is written to memory.
// (Packing all of L and R in the forward and keeping them for the backward
// writes and reads back 512 KiB per token; from cache such a forward took
// ~120 µs/token against ~95 for this one, interleaved runs.)
// No better than noise on a shared 2-core machine, so not done: gathering
// each row whole before the blocks, non-temporal stores of dL and dR, other
// prefetch distances and hints (prefetcht0 is worse: L1 aliasing), and
// software-pipelining token t's backward with token t+1's forward.

#include "jacobian_internal.h"

// Forward register tile: JT[p0 + j][q0 + VL·i] += Σ_r LT[r][q0 + VL·i …] · wd1[K1[p0 + j]][r0 + r].
// mv, np are compile-time constants at every call (see FWD_CASES), so acc
// lives in registers.
static inline __attribute__((always_inline)) KATTR void
KN(fwd_tile)(float *JT, const float *LT, const float *const *Rrows, int64_t r0, int64_t kq, int64_t w,
             const int mv, const int np) {
    VEC acc[FWD_MV][FWD_NP];
    const float *rp[FWD_NP];
    for (int j = 0; j < np; j++) rp[j] = Rrows[j] + r0;
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < np; j++) acc[i][j] = VLOAD(JT + j * kq + i * VL);
    for (int64_t r = 0; r < w; r++) {
        VEC a[FWD_MV];
        for (int i = 0; i < mv; i++) a[i] = VLOAD(LT + r * kq + i * VL);
        for (int j = 0; j < np; j++) {
            VEC b = VBCAST(rp[j] + r);
            for (int i = 0; i < mv; i++) acc[i][j] = VFMA(a[i], b, acc[i][j]);
        }
    }
    for (int i = 0; i < mv; i++)
        for (int j = 0; j < np; j++) VSTORE(JT + j * kq + i * VL, acc[i][j]);
}

// Backward register tile: out[i][v·VL …] = Σ_j A[i][j] · B[j][v·VL …] for
// br rows i and bv vectors of r; `valid` of the tile's bv·VL floats are stored
// (the rest are the zero padding of the last block). B has row stride JSAE_RB.
static inline __attribute__((always_inline)) KATTR void
KN(bwd_tile)(float *out, int64_t ldo, const float *A, int64_t lda, const float *B, int64_t kc,
             int64_t valid, const int br, const int bv) {
    VEC acc[BWD_BR][BWD_BV];
    for (int i = 0; i < br; i++)
        for (int v = 0; v < bv; v++) acc[i][v] = VZERO();
    for (int64_t j = 0; j < kc; j++) {
        VEC b[BWD_BV];
        for (int v = 0; v < bv; v++) b[v] = VLOAD(B + j * JSAE_RB + v * VL);
        for (int i = 0; i < br; i++) {
            VEC a = VBCAST(A + i * lda + j);
            for (int v = 0; v < bv; v++) acc[i][v] = VFMA(a, b[v], acc[i][v]);
        }
    }
    for (int i = 0; i < br; i++)
        for (int v = 0; v < bv; v++) {
            int64_t n = valid - (int64_t)v * VL;
            if (n >= VL) VSTORE(out + i * ldo + v * VL, acc[i][v]);
            else VSTORE_N(out + i * ldo + v * VL, acc[i][v], (int)n);
        }
}

#ifndef TRANSPOSE_BLOCK
// LT[r][q] = Lrows[q][r0 + r] · phi[r0 + r] for r < w, q < k (scalar; the x86
// paths bring an 8×8 one).
static KATTR void KN(transpose)(float *LT, const float *const *Lrows, const float *phi, int64_t r0,
                                int64_t k, int64_t w, int64_t kq) {
    for (int64_t q = 0; q < k; q++)
        for (int64_t r = 0; r < w; r++) LT[r * kq + q] = Lrows[q][r0 + r] * phi[r0 + r];
}
#endif

// Copy w floats (dst = src, or dst = src ⊙ scale) and zero dst[w, round_up(w, 16)).
static inline __attribute__((always_inline)) KATTR void
KN(copy_row)(float *dst, const float *src, const float *scale, int64_t w) {
    int64_t r = 0;
    if (scale) {
        for (; r + VL <= w; r += VL) VSTORE(dst + r, VMUL(VLOAD(src + r), VLOAD(scale + r)));
        for (; r < w; r++) dst[r] = src[r] * scale[r];
    } else {
        for (; r + VL <= w; r += VL) VSTORE(dst + r, VLOAD(src + r));
        for (; r < w; r++) dst[r] = src[r];
    }
    for (; r < jsae_round_up(w, 16); r++) dst[r] = 0;
}

// One block [r0, r0 + w) of the forward: prefetch the rows' block
// JSAE_PREFETCH_BLOCKS ahead (into L2: L1 cannot hold it, as every row starts
// at the same offset in its 4 KiB page, so all k + k rows fall in the same
// few L1 sets), and build LT.
static KATTR void KN(prepare_block)(float *LT, const float *const *Lrows, const float *const *Rrows,
                                    const float *phi, int64_t k, int64_t h, int64_t r0, int64_t w, int64_t kq) {
    const int64_t next = r0 + JSAE_PREFETCH_BLOCKS * JSAE_RB;
    for (int64_t i = 0; i < k; i++) {
        jsae_prefetch_span(Lrows[i], next, h);
        jsae_prefetch_span(Rrows[i], next, h);
    }
    KN(transpose)(LT, Lrows, phi, r0, k, w, kq);
    // Columns q in [k, kq) of LT are read by the last q vector: keep them zero
    // so J's padding stays 0 (kq = k rounded up to the vector width).
    if (kq > k)
        for (int64_t r = 0; r < w; r++)
            for (int64_t q = k; q < kq; q++) LT[r * kq + q] = 0;
}

KATTR void KN(jacobian_token)(float *J, float *dL, float *dR, float *ws,
                              const float *wd1, const float *w2eT, const float *phi,
                              const int64_t *K1, const int64_t *K2, float coef,
                              const int64_t *nextK1, const int64_t *nextK2, const float *nextPhi,
                              int64_t k, int64_t h, double *forwardEnd) {
    jsae_workspace_layout lay = jsae_layout(k, h);
    const int64_t kq = jsae_round_up(k, VL);   // q padded to whole vectors
    const int64_t nqv = kq / VL;
    const float **Lrows = (const float **)(void *)(ws + lay.rows), **Rrows = Lrows + k;
    float *LT = ws + lay.lt, *JT = ws + lay.jt;
    float *G = ws + lay.g, *GT = ws + lay.gt;
    for (int64_t i = 0; i < k; i++) {
        Lrows[i] = w2eT + K2[i] * h;
        Rrows[i] = wd1 + K1[i] * h;
    }

    // ---- forward: JT[p][q] accumulated block by block over r
    for (int64_t e = 0; e < k * kq; e++) JT[e] = 0;
    for (int64_t b = 0; b < lay.nb; b++) {
        const int64_t r0 = b * JSAE_RB, w = jsae_min(JSAE_RB, h - r0);
        KN(prepare_block)(LT, Lrows, Rrows, phi, k, h, r0, w, kq);
        for (int64_t qv0 = 0; qv0 < nqv; qv0 += FWD_MV) {
            const int mv = (int)jsae_min(FWD_MV, nqv - qv0);
            for (int64_t p0 = 0; p0 < k; p0 += FWD_NP) {
                const int np = (int)jsae_min(FWD_NP, k - p0);
                float *JTt = JT + p0 * kq + qv0 * VL;
                const float *LTt = LT + qv0 * VL;
                const float *const *Rt = Rrows + p0;
#define FC(A, B) case (A) * 16 + (B): KN(fwd_tile)(JTt, LTt, Rt, r0, kq, w, (A), (B)); break;
                switch (mv * 16 + np) { FWD_CASES default: break; }
#undef FC
            }
        }
    }
    for (int64_t q = 0; q < k; q++)
        for (int64_t p = 0; p < k; p++) J[q * k + p] = JT[p * kq + q];
    jsae_clock(forwardEnd);

    // The next token's rows come from DRAM, and the backward below re-reads
    // rows already in cache, leaving the memory bus idle: so while the
    // backward works on block b, the next token's block b is prefetched (into
    // L2, or L3 once evicted), and its forward finds its rows in cache.
    // Without a backward only the first blocks are prefetched; the forward's
    // own prefetch, a few blocks ahead, covers the rest.
    if (!dL) {
        if (nextK1) jsae_prefetch_token(wd1, w2eT, nextPhi, nextK1, nextK2, k, h, 0, JSAE_PREFETCH_BLOCKS);
        return;
    }

    // ---- backward: G = coef·sign(J), dL = G·(wd1[K1] ⊙ phi), dR = Gᵀ·L, block by block over r.
    // Per block the k + k rows are first copied into Lb, Rb (⊙ phi), row
    // stride JSAE_RB, zero-padded to whole vectors: the tiles read every row
    // at the same r, which in place would be k + k lines in the same few L1
    // sets (4 KiB aliasing), and the padding covers a ragged end of h.
    for (int64_t q = 0; q < k; q++)
        for (int64_t p = 0; p < k; p++) {
            float v = J[q * k + p];
            float g = v > 0 ? coef : (v < 0 ? -coef : 0.0f);
            G[q * k + p] = g;
            GT[p * k + q] = g;
        }
    float *Lb = ws + lay.lb, *Rb = ws + lay.rb;
    for (int64_t b = 0; b < lay.nb; b++) {
        const int64_t r0 = b * JSAE_RB, w = jsae_min(JSAE_RB, h - r0);
        const int64_t nv = (w + VL - 1) / VL;
        if (nextK1) jsae_prefetch_token(wd1, w2eT, nextPhi, nextK1, nextK2, k, h, b, b + 1);
        for (int64_t i = 0; i < k; i++) {
            KN(copy_row)(Lb + i * JSAE_RB, Lrows[i] + r0, NULL, w);
            KN(copy_row)(Rb + i * JSAE_RB, Rrows[i] + r0, phi + r0, w);
            jsae_prefetch_span(Lrows[i], r0 + JSAE_RB, h);
            jsae_prefetch_span(Rrows[i], r0 + JSAE_RB, h);
        }
        for (int64_t i0 = 0; i0 < k; i0 += BWD_BR) {
            const int br = (int)jsae_min(BWD_BR, k - i0);
            for (int64_t v0 = 0; v0 < nv; v0 += BWD_BV) {
                const int bv = (int)jsae_min(BWD_BV, nv - v0);
                const int64_t valid = w - v0 * VL;
                float *oL = dL + i0 * h + r0 + v0 * VL, *oR = dR + i0 * h + r0 + v0 * VL;
                const float *AL = G + i0 * k, *AR = GT + i0 * k;
                const float *BL = Rb + v0 * VL, *BR_ = Lb + v0 * VL;
#define BC(A, B) case (A) * 16 + (B): \
                    KN(bwd_tile)(oL, h, AL, k, BL, k, valid, (A), (B)); \
                    KN(bwd_tile)(oR, h, AR, k, BR_, k, valid, (A), (B)); break;
                switch (br * 16 + bv) { BWD_CASES default: break; }
#undef BC
            }
        }
    }
}
