// Counts heap allocations with gperftools' MallocHook, which tcmalloc calls
// on every allocation (malloc, calloc, realloc, new, posix_memalign, and the
// Swift runtime's allocations, which go through malloc). glibc has no such
// hook since 2.34, hence tcmalloc. jsae-bench reports these per training step.
#include "CAllocationCounter.h"
#include <gperftools/malloc_hook_c.h>
#include <stdatomic.h>

static _Atomic uint64_t count = 0;
static _Atomic uint64_t bytes = 0;
static _Atomic uint64_t largest = 0;
static _Atomic int installed = 0;

static void on_new(const void *ptr, size_t size) {
    (void)ptr;
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
    uint64_t seen = atomic_load_explicit(&largest, memory_order_relaxed);
    while (size > seen && !atomic_compare_exchange_weak_explicit(&largest, &seen, size, memory_order_relaxed,
                                                                 memory_order_relaxed)) {}
}

int jsae_allocation_counter_install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) return 0;
    return MallocHook_AddNewHook(on_new) ? 0 : -1;
}

void jsae_allocation_counter_read(jsae_allocation_counts *out) {
    out->count = atomic_load(&count);
    out->bytes = atomic_load(&bytes);
    out->largest = atomic_exchange(&largest, 0);
}
