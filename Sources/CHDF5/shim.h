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
#endif
