#ifndef JSAE_CGPERFTOOLS_SHIM_H
#define JSAE_CGPERFTOOLS_SHIM_H
// gperftools CPU profiler: ProfilerStart / ProfilerStop / ProfilerFlush.
#include <gperftools/profiler.h>
// tcmalloc's heap profiler (the executables link tcmalloc):
// HeapProfilerStart / HeapProfilerDump / HeapProfilerStop.
#include <gperftools/heap-profiler.h>
#endif
