// The GELU loop of gelu_template.h, once per instruction-set path, and its
// public entry point. The x86 paths carry their target attribute, so the
// compiler vectorises each for its own vector width with no compiler flag.
#include "jacobian_internal.h"

#define GN(name) name##_gelu_portable
#define GATTR
#include "gelu_template.h"
#undef GN
#undef GATTR

#if defined(__x86_64__)
#define GN(name) name##_gelu_avx2
#define GATTR __attribute__((target("avx2,fma")))
#include "gelu_template.h"
#undef GN
#undef GATTR

#define GN(name) name##_gelu_avx512
#define GATTR __attribute__((target("avx512f,avx2,fma")))
#include "gelu_template.h"
#undef GN
#undef GATTR
#endif

void jsae_gelu_f32(float *z, float *phi, int64_t n, jsae_kernel_path path) {
    if (n <= 0) return;
    switch (jsae_kernel_path_run(path)) {
#if defined(__x86_64__)
    case JSAE_KERNEL_AVX512: gelu_gelu_avx512(z, phi, n); return;
    case JSAE_KERNEL_AVX2: gelu_gelu_avx2(z, phi, n); return;
#endif
    default: gelu_gelu_portable(z, phi, n); return;
    }
}
