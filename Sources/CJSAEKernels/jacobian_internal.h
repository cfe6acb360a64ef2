// Shared by the path files and the dispatcher; not a public header.
#ifndef CJSAE_KERNELS_INTERNAL_H
#define CJSAE_KERNELS_INTERNAL_H
#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include "CJSAEKernels.h"

// The path a call runs: `path` itself where this CPU supports it, else (AUTO
// or a caller's bug) the widest supported one, never a path whose
// instructions would be illegal here. Every entry point dispatches on it.
jsae_kernel_path jsae_kernel_path_run(jsae_kernel_path path);

// Values of r per block. Per block the forward's working set is LT and the
// R block (2·k·JSAE_RB floats, 16 KiB at k = 32), inside a 32 KiB L1 with room
// for the JT tiles and the rows being gathered. A multiple of 16, so a block
// is whole vectors on every path.
#define JSAE_RB 64
// How many blocks ahead the gather prefetches the same rows.
#define JSAE_PREFETCH_BLOCKS 2

static inline int64_t jsae_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t jsae_round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

// Offsets (in floats) of the workspace's parts; each starts 64-byte aligned.
typedef struct {
    int64_t nb;          // blocks of r
    int64_t rows;        // row pointers of L and R: 2·k pointers
    int64_t lb, rb;      // the backward's copy of one block of L and of R ⊙ phi: [k][JSAE_RB] each
    int64_t lt;          // one block of L ⊙ phi transposed: [JSAE_RB][round_up(k, 16)]
    int64_t jt;          // Jᵀ being accumulated: [k][round_up(k, 16)]
    int64_t g, gt;       // coef·sign(J) and its transpose: [k][k] each
    int64_t total;
} jsae_workspace_layout;

static inline jsae_workspace_layout jsae_layout(int64_t k, int64_t h) {
    jsae_workspace_layout l;
    int64_t kq = jsae_round_up(k, 16);
    l.nb = (h + JSAE_RB - 1) / JSAE_RB;
    l.rows = 0;
    l.lb = l.rows + jsae_round_up(2 * k * (int64_t)(sizeof(float *) / sizeof(float)), 16);
    l.rb = l.lb + k * JSAE_RB;
    l.lt = l.rb + k * JSAE_RB;
    l.jt = l.lt + JSAE_RB * kq;
    l.g = l.jt + k * kq;
    l.gt = l.g + jsae_round_up(k * k, 16);
    l.total = l.gt + jsae_round_up(k * k, 16);
    return l;
}

// CLOCK_MONOTONIC in seconds into *t, when t is not NULL.
static inline void jsae_clock(double *t) {
    if (!t) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Prefetch the 64-byte lines of row[from, from + JSAE_RB) that lie inside [0, h).
static inline void jsae_prefetch_span(const float *row, int64_t from, int64_t h) {
    for (int64_t r = from; r < jsae_min(from + JSAE_RB, h); r += 16) __builtin_prefetch(row + r, 0, 2);
}

// Prefetch blocks [b0, b1) of a token's rows and phi.
static inline void jsae_prefetch_token(const float *wd1, const float *w2eT, const float *phi,
                                       const int64_t *K1, const int64_t *K2, int64_t k, int64_t h,
                                       int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; b++) {
        for (int64_t i = 0; i < k; i++) {
            jsae_prefetch_span(w2eT + K2[i] * h, b * JSAE_RB, h);
            jsae_prefetch_span(wd1 + K1[i] * h, b * JSAE_RB, h);
        }
        jsae_prefetch_span(phi, b * JSAE_RB, h);
    }
}

#define JSAE_TOKEN_ARGS float *J, float *dL, float *dR, float *ws, \
    const float *wd1, const float *w2eT, const float *phi, \
    const int64_t *K1, const int64_t *K2, float coef, \
    const int64_t *nextK1, const int64_t *nextK2, const float *nextPhi, int64_t k, int64_t h, \
    double *forwardEnd

void jacobian_token_portable(JSAE_TOKEN_ARGS);
#if defined(__x86_64__)
void jacobian_token_avx2(JSAE_TOKEN_ARGS);
void jacobian_token_avx512(JSAE_TOKEN_ARGS);
#endif

// Tile-case lists: FC(a, b) / BC(a, b) for a in 1…A, b in 1…B.
#define JSAE_ROW2(M, A) M(A, 1) M(A, 2)
#define JSAE_ROW4(M, A) JSAE_ROW2(M, A) M(A, 3) M(A, 4)
#define JSAE_ROW6(M, A) JSAE_ROW4(M, A) M(A, 5) M(A, 6)
#define JSAE_ROW8(M, A) JSAE_ROW6(M, A) M(A, 7) M(A, 8)
#endif
