#ifndef JSAE_CHDF5_SHIM_H
#define JSAE_CHDF5_SHIM_H
#include <hdf5.h>
#include <execinfo.h>
#include <stdio.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

// HDF5 exposes its predefined types and defaults as macros that expand to
// global variables behind H5open(); Swift cannot import those, so each one
// the package uses is wrapped in a function here.
static inline hid_t jsae_h5t_native_float(void)  { return H5T_NATIVE_FLOAT; }
static inline hid_t jsae_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t jsae_h5t_native_int64(void)  { return H5T_NATIVE_INT64; }
static inline hid_t jsae_h5t_std_i64le(void)     { return H5T_STD_I64LE; }
static inline hid_t jsae_h5t_ieee_f32le(void)    { return H5T_IEEE_F32LE; }
static inline hid_t jsae_h5t_ieee_f64le(void)    { return H5T_IEEE_F64LE; }
static inline hid_t jsae_h5t_c_s1(void)          { return H5T_C_S1; }
static inline hid_t jsae_h5p_default(void)       { return H5P_DEFAULT; }
static inline hid_t jsae_h5p_link_create(void)   { return H5P_LINK_CREATE; }
static inline hid_t jsae_h5p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t jsae_h5s_all(void)           { return H5S_ALL; }
static inline hid_t jsae_h5e_default(void)       { return H5E_DEFAULT; }
static inline unsigned jsae_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned jsae_h5f_acc_trunc(void)  { return H5F_ACC_TRUNC; }
static inline unsigned jsae_h5f_acc_rdwr(void)   { return H5F_ACC_RDWR; }
static inline size_t jsae_h5t_variable(void)     { return H5T_VARIABLE; }

// Silence HDF5's automatic error-stack printing: the package reports its own
// one-line errors instead of HDF5's multi-line trace.
static inline void jsae_h5_silence_errors(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

// IEEE binary16 as h5py writes float16 (little-endian): used by tests and by
// writers that opt into half precision.
static inline hid_t jsae_h5t_make_f16le(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_precision(t, 16);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}
#include <string.h>
#include <signal.h>
#include <unistd.h>

// The operating system's reason for the most recent failed HDF5 call, when
// HDF5's file driver recorded one (its messages carry "error message =
// '<strerror>'"): copied into buf (empty when there is none).
static herr_t jsae_h5_walk_reason(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    char *buf = (char *)data;
    if (buf[0] != 0 || e->desc == NULL) return 0;
    const char *key = "error message = '";
    const char *p = strstr(e->desc, key);
    if (p == NULL) return 0;
    p += strlen(key);
    const char *q = strchr(p, '\'');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    if (len > 255) len = 255;
    memcpy(buf, p, len);
    buf[len] = 0;
    return 0;
}
static inline void jsae_h5_os_reason(char *buf, size_t size) {
    if (size < 256) { if (size) buf[0] = 0; return; }
    buf[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, jsae_h5_walk_reason, buf);
}

// HDF5 1.10 can crash (SIGSEGV/SIGBUS/SIGABRT) on a corrupted file before any
// check of ours can run. The executables install this guard: such a signal
// becomes one line naming the file last opened and exit status 2, instead of
// a silent core dump. (Only async-signal-safe calls in the handler.) It also
// ignores SIGXFSZ, so a write beyond `ulimit -f` fails with EFBIG and is
// reported like any other failed write.
#define JSAE_STR(x) #x
#define JSAE_XSTR(x) JSAE_STR(x)
// (Function-local statics: a system-library module cannot define globals.
// Every caller is in JSAEIO, so there is one copy.)
static inline char *jsae_guard_file_buf(void) { static char buf[4096]; return buf; }
static inline const char **jsae_guard_prefix_ptr(void) { static const char *p = "jsae"; return &p; }
#define jsae_guard_file (jsae_guard_file_buf())
#define jsae_guard_prefix (*jsae_guard_prefix_ptr())
static inline void jsae_guard_set_file(const char *path) {
    size_t n = strlen(path);
    if (n >= 4096) n = 4095;
    memcpy(jsae_guard_file, path, n);
    jsae_guard_file[n] = 0;
}
// The executable code of HDF5 and of the compression libraries it calls,
// and of libc, as address ranges, collected when the guard is installed:
// a crash is HDF5's only when the code that crashed (or, for an abort, the
// code that called abort) is HDF5's. Anything else is a failure of jsae's
// own, which the guard must not blame on the file.
typedef struct { uintptr_t lo, hi; } jsae_guard_range;
enum { jsae_guard_max_ranges = 32 };
static inline jsae_guard_range *jsae_guard_ranges(int which) {   // 0: HDF5 and its filters, 1: libc
    static jsae_guard_range r[2][jsae_guard_max_ranges];
    return r[which];
}
static inline int *jsae_guard_range_count(int which) { static int n[2]; return &n[which]; }
// From /proc/self/maps, once at installation (not in the handler): the
// executable mappings of the libraries named above.
static inline void jsae_guard_collect_ranges(void) {
    *jsae_guard_range_count(0) = 0;
    *jsae_guard_range_count(1) = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return;
    char line[4352];
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[8] = {0};
        int at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &at) < 3 || perms[2] != 'x' || at == 0) continue;
        const char *name = line + at;
        const char *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        int which;
        if (strncmp(base, "libhdf5", 7) == 0 || strncmp(base, "libz.so", 7) == 0 || strncmp(base, "libsz.so", 8) == 0
            || strncmp(base, "libaec.so", 9) == 0) which = 0;
        else if (strncmp(base, "libc.so", 7) == 0) which = 1;
        else continue;
        int *n = jsae_guard_range_count(which);
        if (*n < jsae_guard_max_ranges) jsae_guard_ranges(which)[(*n)++] = (jsae_guard_range){ lo, hi };
    }
    fclose(maps);
}
static inline int jsae_guard_in(int which, uintptr_t pc) {
    for (int i = 0; i < *jsae_guard_range_count(which); i++) {
        if (pc >= jsae_guard_ranges(which)[i].lo && pc < jsae_guard_ranges(which)[i].hi) return 1;
    }
    return 0;
}
// Whether the crash at `pc` is HDF5's. For SIGABRT `pc` is inside libc's
// raise; the frames are then walked out of libc to abort's caller.
static inline int jsae_guard_blames_hdf5(int sig, uintptr_t pc) {
    if (sig != SIGABRT) return jsae_guard_in(0, pc);
    void *frames[64];
    int n = backtrace(frames, 64), i = 0;
    while (i < n && !jsae_guard_in(1, (uintptr_t)frames[i])) i++;   // the handler's own frames
    while (i < n && jsae_guard_in(1, (uintptr_t)frames[i])) i++;    // the trampoline, raise, abort
    // A return address points just past its call: step back into it.
    return i < n && jsae_guard_in(0, (uintptr_t)frames[i] - 1);
}
static inline uintptr_t jsae_guard_pc(void *ucontext) {
    if (!ucontext) return 0;
#if defined(__x86_64__)
    return (uintptr_t)((ucontext_t *)ucontext)->uc_mcontext.gregs[16];   // REG_RIP
#elif defined(__aarch64__)
    return (uintptr_t)((ucontext_t *)ucontext)->uc_mcontext.pc;
#else
    return 0;
#endif
}
static void jsae_guard_write(const char *s) { (void)!write(2, s, strlen(s)); }
// Walking the frames takes the loader's lock; should the crash have happened
// while it was held, the alarm ends the process instead of a hang.
static void jsae_guard_alarm(int sig) {
    (void)sig;
    jsae_guard_write(jsae_guard_prefix);
    jsae_guard_write(": error: crashed, and the crash could not be attributed; please report it with the command\n");
    _exit(2);
}
static void jsae_guard_handler(int sig, siginfo_t *info, void *ucontext) {
    (void)info;
    signal(SIGALRM, jsae_guard_alarm);
    alarm(5);
    const char *what = sig == SIGSEGV ? "segmentation fault" : sig == SIGBUS ? "bus error" : "abort";
    const char *file = jsae_guard_file[0] ? jsae_guard_file : "(no file open)";
    jsae_guard_write(jsae_guard_prefix);
    jsae_guard_write(": error: ");
    jsae_guard_write(file);
    if (jsae_guard_blames_hdf5(sig, jsae_guard_pc(ucontext))) {
        jsae_guard_write(": HDF5 " JSAE_XSTR(H5_VERS_MAJOR) "." JSAE_XSTR(H5_VERS_MINOR) "." JSAE_XSTR(H5_VERS_RELEASE) " crashed (");
        jsae_guard_write(what);
        jsae_guard_write(") while reading or writing this file; it is probably corrupt (see README, Failure behaviour)\n");
    } else {
        jsae_guard_write(": ");
        jsae_guard_write(jsae_guard_prefix);
        jsae_guard_write(" itself failed (");
        jsae_guard_write(what);
        jsae_guard_write(") outside HDF5 while this was the last file opened: a bug in jsae, not a verdict on the file; please report it with the command\n");
    }
    _exit(2);
}
static inline void jsae_guard_install(const char *prefix) {
    jsae_guard_prefix = prefix;
    jsae_guard_collect_ranges();
    // backtrace() loads its unwinder on first use, which may allocate:
    // done here, not for the first time inside the handler.
    void *warm[4];
    (void)backtrace(warm, 4);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = jsae_guard_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGABRT, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN);
}

// Allocated chunks of a chunked dataset (H5Dget_num_chunks over the whole
// extent); -1 on failure. HDF5 1.10 refuses H5S_ALL here ("invalid dataspace
// identifier"), so the dataset's own file space is passed.
static inline long long jsae_h5d_num_chunks(hid_t did) {
    hsize_t n = 0;
    hid_t sid = H5Dget_space(did);
    if (sid < 0) return -1;
    herr_t e = H5Dget_num_chunks(did, sid, &n);
    if (H5Sclose(sid) < 0 || e < 0) return -1;
    return (long long)n;
}
#endif
