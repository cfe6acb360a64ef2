#ifndef JSAE_KERNEL_REFERENCE_H
#define JSAE_KERNEL_REFERENCE_H
// Plain double-precision reference of the per-token Jacobian kernel, for the
// tests only (in C so that it runs fast in a debug build; the tests compare).
// Letters as in CJSAEKernels.h. Besides each exact value it returns the sum of
// the absolute values of its terms, which scales the rounding bound.
#include <stdint.h>

/// Jref, Jabs [k, k]: J[q, p] = Σ_r w2eT[K2[q], r] · wd1[K1[p], r] · phi[r].
void jsae_reference_forward(double *Jref, double *Jabs,
                            const float *wd1, const float *w2eT, const float *phi,
                            const int64_t *K1, const int64_t *K2, int64_t k, int64_t h);

/// dLref, dLabs, dRref, dRabs [k, h] for a given G [k, k]:
/// dL[q, r] = Σ_p G[q, p] · wd1[K1[p], r] · phi[r];  dR[p, r] = Σ_q G[q, p] · w2eT[K2[q], r].
void jsae_reference_backward(double *dLref, double *dLabs, double *dRref, double *dRabs,
                             const double *G, const float *wd1, const float *w2eT, const float *phi,
                             const int64_t *K1, const int64_t *K2, int64_t k, int64_t h);
#endif
