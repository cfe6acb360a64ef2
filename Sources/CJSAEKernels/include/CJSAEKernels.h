#ifndef CJSAE_KERNELS_H
#define CJSAE_KERNELS_H
// The Float training step's C kernels: the per-token Jacobian (what
// jacobianPass in JSAECore runs per token) and the MLP's GELU (what
// mlpForward runs), each compiled per instruction-set path.
//
// Dimension letters, used throughout this target:
//   k      latents per token (TopK), also the side of the Jacobian J [k, k]
//   h      MLP hidden width d_mlp, the contraction length of the forward
//   m_in   rows of wd1 (input-SAE latents); m_out rows of w2eT (output-SAE latents)
//   q, p   row / column of J: q runs over K2 (output latents), p over K1 (input latents)
//   r      index in [0, h)
// All matrices are row-major and dense; indices are int64_t (Swift Int).
//
// For one token, with L = w2eT[K2] [k, h] and R = wd1[K1] ⊙ phi [k, h]:
//   forward   J[q, p]  = Σ_r L[q, r] · R[p, r]                    (J = L·Rᵀ)
//   backward  G        = coef · sign(J), sign(0) = sign(NaN) = 0
//             dL[q, r] = Σ_p G[q, p] · R[p, r]                    (dL = G·R,  goes to dw2eT[K2[q]])
//             dR[p, r] = Σ_q G[q, p] · L[q, r]                    (dR = Gᵀ·L, goes to dwd1[K1[p]] after ⊙ phi)
// dR is returned without the ⊙ phi so that the caller's deterministic,
// latent-partitioned scatter applies phi, as it does for the BLAS path.
//
// Argument order: outputs, then inputs, then sizes (as llm.c).

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set path of the kernels. AUTO is the widest path this CPU
/// supports, resolved once per process; the tests name each path.
typedef enum jsae_kernel_path {
    JSAE_KERNEL_AUTO = 0,
    JSAE_KERNEL_PORTABLE = 1,  // C with 4-wide generic vectors, any CPU
    JSAE_KERNEL_AVX2 = 2,      // x86-64 AVX2 + FMA, 8 floats a vector
    JSAE_KERNEL_AVX512 = 3,    // x86-64 AVX-512F, 16 floats a vector (compiled on every x86-64
                               // build; the tests exercise it only on a CPU that has AVX-512F)
} jsae_kernel_path;

/// 1 if this CPU (and OS) can run `path`, else 0. AUTO is always supported.
int jsae_kernel_path_supported(jsae_kernel_path path);
/// The path AUTO resolves to (never AUTO).
jsae_kernel_path jsae_kernel_path_selected(void);
/// "auto", "portable", "avx2", "avx512".
const char *jsae_kernel_path_name(jsae_kernel_path path);

/// Floats of workspace one call needs (per thread, reusable across calls and
/// tokens): row pointers, one transposed block of L, J, G and one block of L
/// and R for the backward; independent of h, 36.5 KiB at k = 32. The gathered
/// rows are read in place, never copied whole. Align it to 64 bytes for speed.
size_t jsae_jacobian_workspace_floats(int64_t k, int64_t h);

/// One token's Jacobian and, optionally, the backward of coef · Σ|J|.
///   J        [k, k] out: rows in K2 order, columns in K1 order
///   dL, dR   [k, h] out (overwritten, never accumulated), or both NULL for the forward only
///   workspace           jsae_jacobian_workspace_floats(k, h) floats, not shared between threads
///   wd1      [m_in, h], w2eT [m_out, h], phi [h] (φ' of this token)
///   K1, K2   [k] row indices into wd1 and w2eT, which the caller has checked
///   nextK1, nextK2, nextPhi   the token the caller runs next, or all NULL:
///            while this token's backward re-reads rows already in cache,
///            the next token's rows are prefetched block by block (the
///            gathered rows come from DRAM, and the bus is otherwise idle
///            then). They change no result.
///   forwardEnd  NULL, or where the CLOCK_MONOTONIC time (seconds) at which
///            J was complete is written, so a caller can split its phases.
/// The result does not depend on m_in, m_out, the workspace's contents, the
/// next token or the thread calling it; it does depend (in the last bits) on
/// `path`.
void jsae_jacobian_token_f32(float *J, float *dL, float *dR, float *workspace,
                             const float *wd1, const float *w2eT, const float *phi,
                             const int64_t *K1, const int64_t *K2, float coef,
                             const int64_t *nextK1, const int64_t *nextK2, const float *nextPhi,
                             int64_t k, int64_t h, double *forwardEnd, jsae_kernel_path path);

/// The exact GELU of the MLP in place, z[i] = 0.5·z·(1 + erf(z/√2)), and,
/// where phi is not NULL, its derivative phi[i] = Φ(z) + z·φ(z), for
/// i < n: the expressions of JSAECore's Activation.gelu with erf and exp
/// evaluated within 1 ulp by polynomials (libm's are one call per entry;
/// these vectorise). The same bits on every path.
void jsae_gelu_f32(float *z, float *phi, int64_t n, jsae_kernel_path path);

#ifdef __cplusplus
}
#endif
#endif
