#ifndef JSAE_CHDF5_SHIM_H
#define JSAE_CHDF5_SHIM_H
#include <hdf5.h>

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
static void jsae_guard_handler(int sig) {
    const char *a = ": error: ";
    const char *b = ": HDF5 " JSAE_XSTR(H5_VERS_MAJOR) "." JSAE_XSTR(H5_VERS_MINOR) "." JSAE_XSTR(H5_VERS_RELEASE) " crashed (";
    const char *c = sig == SIGSEGV ? "segmentation fault" : sig == SIGBUS ? "bus error" : "abort";
    const char *d = ") while reading or writing this file; it is probably corrupt (see README, Failure behaviour)\n";
    (void)!write(2, jsae_guard_prefix, strlen(jsae_guard_prefix));
    (void)!write(2, a, strlen(a));
    (void)!write(2, jsae_guard_file[0] ? jsae_guard_file : "(no file open)", jsae_guard_file[0] ? strlen(jsae_guard_file) : 14);
    (void)!write(2, b, strlen(b));
    (void)!write(2, c, strlen(c));
    (void)!write(2, d, strlen(d));
    _exit(2);
}
static inline void jsae_guard_install(const char *prefix) {
    jsae_guard_prefix = prefix;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = jsae_guard_handler;
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
