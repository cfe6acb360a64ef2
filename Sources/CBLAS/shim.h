#ifndef JSAE_CBLAS_SHIM_H
#define JSAE_CBLAS_SHIM_H
// OpenBLAS's cblas.h (pthread build, include path from pkg-config `openblas`).
#include <cblas.h>
// Threading controls are OpenBLAS extensions declared in cblas.h:
// openblas_set_num_threads, openblas_get_num_threads, openblas_get_corename.
#endif
