#ifndef JSAE_ALLOCATION_COUNTER_H
#define JSAE_ALLOCATION_COUNTER_H
#include <stdint.h>

/// Heap allocations of the whole process since the hook was installed.
typedef struct {
    uint64_t count;    ///< allocations
    uint64_t bytes;    ///< bytes requested
    uint64_t largest;  ///< largest single request since the previous read (reset by each read)
} jsae_allocation_counts;

/// Installs (once) a tcmalloc new-hook that counts every heap allocation.
/// Returns 0 on success, -1 if the hook could not be added.
int jsae_allocation_counter_install(void);
void jsae_allocation_counter_read(jsae_allocation_counts *out);
#endif
