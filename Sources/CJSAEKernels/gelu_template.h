// The exact GELU and its derivative over an array, written once as a
// branch-free scalar loop and compiled per instruction-set path
// (gelu_paths.c), where the compiler vectorises it under the path's target
// attribute. Not a public header: it lives outside include/.
//
// Required before inclusion: GN(name) (the path's name for a function) and
// GATTR (its target attribute, or nothing).
//
// Every rounding is spelled out: products and sums are separate IEEE
// operations (contraction off, below) and every fused multiply-add is an
// explicit fmaf, which rounds once on every path (an instruction where the
// CPU has FMA, libm's correctly rounded fmaf where it has not). So the
// three paths give the same bits, and the tests check that they do.

#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma clang fp contract(off)

// e^x for x ≤ 88, 0 below -87 (where e^x is subnormal, under 1.2e-38):
// x = n·ln2 + f with n = rint(x·log2 e) (the 1.5·2²³ rounding trick) and
// ln2 in two parts (Cody and Waite), e^f by a degree-7 polynomial
// (Cephes' expf coefficients), scaled by 2^n through the exponent bits.
// At most 1 ulp from e^x over [-87, 0] (tests).
static inline __attribute__((always_inline)) GATTR float GN(expf)(float x) {
    float c = x < -87.0f ? -87.0f : x;
    c = c > 88.0f ? 88.0f : c;
    const float magic = 12582912.0f;
    float t = c * 1.44269504088896341f + magic;
    float n = t - magic;
    float f = fmaf(n, -0.693359375f, c);
    f = fmaf(n, 2.12194440e-4f, f);
    float p = 1.9875691500e-4f;
    p = fmaf(p, f, 1.3981999507e-3f);
    p = fmaf(p, f, 8.3334519073e-3f);
    p = fmaf(p, f, 4.1665795894e-2f);
    p = fmaf(p, f, 1.6666665459e-1f);
    p = fmaf(p, f, 5.0000001201e-1f);
    float r = fmaf(p, f * f, f) + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    r = r * scale;
    return x < -87.0f ? 0.0f : r;
}

// erf(a) within 1 ulp (tests), after N. Juffa's erff: an odd polynomial
// in a for |a| ≤ 0.927734375, 1 − e^{poly(|a|)} with a's sign above. Both
// are computed and one selected, so the loop has no branch.
static inline __attribute__((always_inline)) GATTR float GN(erff)(float a) {
    float t = fabsf(a), s = a * a;
    float r = fmaf(-1.72853470e-5f, t, 3.83197126e-4f);
    float u = fmaf(-3.88396438e-3f, t, 2.42546219e-2f);
    r = fmaf(r, s, u);
    r = fmaf(r, t, -1.06777877e-1f);
    r = fmaf(r, t, -6.34846687e-1f);
    r = fmaf(r, t, -1.28717512e-1f);
    r = fmaf(r, t, -t);
    float big = copysignf(1.0f - GN(expf)(r), a);
    float q = -5.96761703e-4f;
    q = fmaf(q, s, 4.99119423e-3f);
    q = fmaf(q, s, -2.67681349e-2f);
    q = fmaf(q, s, 1.12819925e-1f);
    q = fmaf(q, s, -3.76125336e-1f);
    q = fmaf(q, s, 1.28379166e-1f);
    float small = fmaf(q, a, a);
    return t > 0.927734375f ? big : small;
}

// z[i] = gelu(z[i]) = 0.5·z·(1 + erf(z/√2)) and, where phi is not NULL,
// phi[i] = gelu'(z[i]) = 0.5·(1 + e) + z·(e^{-z²/2}/√(2π)): the same
// expressions, in the same order, as Activation.valueAndDerivative in
// JSAECore. NaN in, NaN out.
GATTR void GN(gelu)(float *z, float *phi, int64_t n) {
    if (phi) {
        for (int64_t i = 0; i < n; i++) {
            float x = z[i];
            float e = GN(erff)(x * 0.70710678118654752440f);
            float cdf = 0.5f * (1.0f + e);
            float pdf = 0.39894228040143267794f * GN(expf)(-0.5f * x * x);
            z[i] = 0.5f * x * (1.0f + e);
            phi[i] = cdf + x * pdf;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float x = z[i];
            float e = GN(erff)(x * 0.70710678118654752440f);
            z[i] = 0.5f * x * (1.0f + e);
        }
    }
}
