#include "KernelReference.h"
#include <math.h>

void jsae_reference_forward(double *Jref, double *Jabs,
                            const float *wd1, const float *w2eT, const float *phi,
                            const int64_t *K1, const int64_t *K2, int64_t k, int64_t h) {
    for (int64_t q = 0; q < k; q++)
        for (int64_t p = 0; p < k; p++) {
            const float *l = w2eT + K2[q] * h, *w = wd1 + K1[p] * h;
            double s = 0, a = 0;
            for (int64_t r = 0; r < h; r++) {
                double t = (double)l[r] * (double)w[r] * (double)phi[r];
                s += t; a += fabs(t);
            }
            Jref[q * k + p] = s; Jabs[q * k + p] = a;
        }
}

void jsae_reference_backward(double *dLref, double *dLabs, double *dRref, double *dRabs,
                             const double *G, const float *wd1, const float *w2eT, const float *phi,
                             const int64_t *K1, const int64_t *K2, int64_t k, int64_t h) {
    for (int64_t e = 0; e < k * h; e++) dLref[e] = dLabs[e] = dRref[e] = dRabs[e] = 0;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < k; j++) {
            double gL = G[i * k + j], gR = G[j * k + i];
            const float *rowR = wd1 + K1[j] * h, *rowL = w2eT + K2[j] * h;
            for (int64_t r = 0; r < h; r++) {
                double tL = gL * (double)rowR[r] * (double)phi[r], tR = gR * (double)rowL[r];
                dLref[i * h + r] += tL; dLabs[i * h + r] += fabs(tL);
                dRref[i * h + r] += tR; dRabs[i * h + r] += fabs(tR);
            }
        }
}
