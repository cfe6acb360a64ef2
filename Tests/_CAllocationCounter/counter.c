// Counts heap allocations with gperftools' MallocHook, which tcmalloc calls
// on every allocation (malloc, calloc, realloc, new, posix_memalign, and the
// Swift runtime's swift_slowAlloc, which goes through malloc). glibc has no
// such hook since 2.34, hence tcmalloc.
#include "CAllocationCounter.h"
#include <gperftools/malloc_hook_c.h>
#include <stdatomic.h>

static _Atomic uint64_t count = 0;
static _Atomic int installed = 0;

static void on_new(const void *ptr, size_t size) {
    (void)ptr; (void)size;
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
}

int jsae_allocation_counter_install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) return 0;
    return MallocHook_AddNewHook(on_new) ? 0 : -1;
}

uint64_t jsae_allocation_count(void) { return atomic_load(&count); }
