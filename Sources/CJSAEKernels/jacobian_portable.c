// Portable path: GNU C vector extensions (clang and gcc, any architecture),
// 4 floats a vector, so SSE2 or NEON registers without any target attribute.
#include <string.h>
#include "jacobian_internal.h"

typedef float v4f __attribute__((vector_size(16)));

static inline v4f v4_load(const float *p) { v4f v; memcpy(&v, p, sizeof v); return v; }
static inline void v4_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }
static inline void v4_store_n(float *p, v4f v, int n) { for (int i = 0; i < n; i++) p[i] = v[i]; }

#define KN(name) name##_portable
#define KATTR
#define VEC v4f
#define VL 4
#define VZERO() ((v4f){0, 0, 0, 0})
#define VLOAD(p) v4_load(p)
#define VSTORE(p, v) v4_store((p), (v))
#define VSTORE_N(p, v, n) v4_store_n((p), (v), (n))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VMUL(a, b) ((a) * (b))
#define VBCAST(p) ((v4f){*(p), *(p), *(p), *(p)})
// 2×4 and 4×2 tiles: 8 accumulators, within the 16 registers of SSE2.
#define FWD_MV 2
#define FWD_NP 4
#define FWD_CASES JSAE_ROW4(FC, 1) JSAE_ROW4(FC, 2)
#define BWD_BR 4
#define BWD_BV 2
#define BWD_CASES JSAE_ROW2(BC, 1) JSAE_ROW2(BC, 2) JSAE_ROW2(BC, 3) JSAE_ROW2(BC, 4)
#include "jacobian_template.h"
