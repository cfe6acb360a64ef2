#ifndef JSAE_ALLOCATION_COUNTER_H
#define JSAE_ALLOCATION_COUNTER_H
#include <stdint.h>
/// Installs (once) a tcmalloc new-hook that counts every heap allocation of
/// the process. Returns 0 on success, -1 if the hook could not be added.
int jsae_allocation_counter_install(void);
/// Allocations counted so far, on all threads.
uint64_t jsae_allocation_count(void);
#endif
