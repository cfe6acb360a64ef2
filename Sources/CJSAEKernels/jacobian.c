// Path selection, and the per-token Jacobian's public entry point.
#include "CJSAEKernels.h"
#include "jacobian_internal.h"

int jsae_kernel_path_supported(jsae_kernel_path path) {
    switch (path) {
    case JSAE_KERNEL_AUTO:
    case JSAE_KERNEL_PORTABLE:
        return 1;
#if defined(__x86_64__)
    // __builtin_cpu_supports also checks that the OS saves the wide registers.
    case JSAE_KERNEL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case JSAE_KERNEL_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

const char *jsae_kernel_path_name(jsae_kernel_path path) {
    switch (path) {
    case JSAE_KERNEL_AUTO: return "auto";
    case JSAE_KERNEL_PORTABLE: return "portable";
    case JSAE_KERNEL_AVX2: return "avx2";
    case JSAE_KERNEL_AVX512: return "avx512";
    }
    return "unknown";
}

// Resolved once; two threads racing here compute the same value, so a plain
// relaxed atomic is enough.
static int selected_path = -1;

jsae_kernel_path jsae_kernel_path_selected(void) {
    int s = __atomic_load_n(&selected_path, __ATOMIC_RELAXED);
    if (s >= 0) return (jsae_kernel_path)s;
    jsae_kernel_path best = JSAE_KERNEL_PORTABLE;
    if (jsae_kernel_path_supported(JSAE_KERNEL_AVX2)) best = JSAE_KERNEL_AVX2;
    if (jsae_kernel_path_supported(JSAE_KERNEL_AVX512)) best = JSAE_KERNEL_AVX512;
    __atomic_store_n(&selected_path, (int)best, __ATOMIC_RELAXED);
    return best;
}

size_t jsae_jacobian_workspace_floats(int64_t k, int64_t h) {
    return (size_t)jsae_layout(k, h).total;
}

typedef void (*token_fn)(JSAE_TOKEN_ARGS);

jsae_kernel_path jsae_kernel_path_run(jsae_kernel_path path) {
    return path == JSAE_KERNEL_AUTO || !jsae_kernel_path_supported(path) ? jsae_kernel_path_selected() : path;
}

static token_fn resolve(jsae_kernel_path path) {
    switch (jsae_kernel_path_run(path)) {
#if defined(__x86_64__)
    case JSAE_KERNEL_AVX2: return jacobian_token_avx2;
    case JSAE_KERNEL_AVX512: return jacobian_token_avx512;
#endif
    default: return jacobian_token_portable;
    }
}

void jsae_jacobian_token_f32(float *J, float *dL, float *dR, float *workspace,
                             const float *wd1, const float *w2eT, const float *phi,
                             const int64_t *K1, const int64_t *K2, float coef,
                             const int64_t *nextK1, const int64_t *nextK2, const float *nextPhi,
                             int64_t k, int64_t h, double *forwardEnd, jsae_kernel_path path) {
    if (k <= 0) { jsae_clock(forwardEnd); return; }
    if (!dL || !dR) dL = dR = NULL;
    if (!nextK1 || !nextK2 || !nextPhi) nextK1 = nextK2 = NULL, nextPhi = NULL;
    resolve(path)(J, dL, dR, workspace, wd1, w2eT, phi, K1, K2, coef, nextK1, nextK2, nextPhi, k, h, forwardEnd);
}
