import CHDF5
import JSAECore
import Foundation

extension HDF5File {
    func linkCreateProps() -> hid_t {
        let lcpl = H5Pcreate(jsae_h5p_link_create())
        H5Pset_create_intermediate_group(lcpl, 1)
        return lcpl
    }

    /// Storage type for written floating data.
    public enum StoredFloat: Sendable { case float16, float32, float64 }

    /// Creates a dataset (and any missing parent groups) to be filled by
    /// `writeRows`. Returns nothing: datasets are reopened by name.
    public func createDataset(_ name: String, shape: [Int], stored: StoredFloat) throws {
        switch stored {
        case .float16:
            // A type built for the call (no predefined binary16 in HDF5 1.10).
            let t = jsae_h5t_make_f16le()
            defer { H5Tclose(t) }
            try createDataset(name, shape: shape, fileType: t)
        case .float32: try createDataset(name, shape: shape, fileType: jsae_h5t_ieee_f32le())
        case .float64: try createDataset(name, shape: shape, fileType: jsae_h5t_ieee_f64le())
        }
    }

    public func createIntDataset(_ name: String, shape: [Int]) throws {
        try createDataset(name, shape: shape, fileType: jsae_h5t_std_i64le())
    }

    func createDataset(_ name: String, shape: [Int], fileType: hid_t) throws {
        var dims = shape.map { hsize_t($0) }
        let sid = H5Screate_simple(Int32(dims.count), &dims, nil)
        defer { H5Sclose(sid) }
        let lcpl = linkCreateProps()
        defer { H5Pclose(lcpl) }
        let did = H5Dcreate2(id, name, fileType, sid, lcpl, jsae_h5p_default(), jsae_h5p_default())
        guard did >= 0 else { throw writeError("cannot create dataset \(name)") }
        guard H5Dclose(did) >= 0 else { throw writeError("cannot write dataset \(name)") }
    }

    /// Writes a whole dataset (creating it).
    public func write<T: JSAEScalar>(_ name: String, shape: [Int], _ data: [T], stored: StoredFloat? = nil) throws {
        precondition(shape.reduce(1, *) == data.count, "write \(name): \(data.count) values for shape \(shape)")
        try createDataset(name, shape: shape, stored: stored ?? (T.self == Float.self ? .float32 : .float64))
        try writeSlab(name, firstDimRange: 0..<(shape.first ?? 1), data: data, memType: memType(T.self))
    }

    public func write<T: JSAEScalar>(_ name: String, _ m: Matrix<T>, stored: StoredFloat? = nil) throws {
        try write(name, shape: [m.rows, m.cols], m.data, stored: stored)
    }

    public func writeInts(_ name: String, shape: [Int], _ data: [Int]) throws {
        try createIntDataset(name, shape: shape)
        try writeRows(name, 0..<(shape.first ?? 1), ints: data)
    }

    /// Writes rows `range` (along the first dimension) of an existing dataset.
    public func writeRows<T: JSAEScalar>(_ name: String, _ range: Range<Int>, _ data: [T]) throws {
        try writeSlab(name, firstDimRange: range, data: data, memType: memType(T.self))
    }

    public func writeRows(_ name: String, _ range: Range<Int>, ints: [Int]) throws {
        try writeSlab(name, firstDimRange: range, data: ints.map { Int64($0) }, memType: jsae_h5t_native_int64())
    }

    /// A failed write or close, with the OS reason when HDF5 recorded one.
    func writeError(_ what: String) -> JSAEError {
        JSAEError(file: path, what + ": " + (HDF5File.osReason() ?? "HDF5 reported a write error"))
    }

    func writeSlab<E>(_ name: String, firstDimRange range: Range<Int>, data: [E], memType: hid_t) throws {
        let did = try openDataset(name)
        var closedOK = false
        defer { if !closedOK { H5Dclose(did) } }
        let shape = try shape(of: did, name)
        if data.isEmpty { return }
        let fspace = H5Dget_space(did)
        defer { H5Sclose(fspace) }
        var start = [hsize_t](repeating: 0, count: max(shape.count, 1))
        var count = shape.isEmpty ? [1] : shape.map { hsize_t($0) }
        if !shape.isEmpty {
            start[0] = hsize_t(range.lowerBound)
            count[0] = hsize_t(range.count)
            guard H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nil, &count, nil) >= 0 else {
                throw JSAEError(file: path, "cannot select rows \(range) of \(name)")
            }
        }
        precondition(count.reduce(1, *) == hsize_t(data.count), "writeRows \(name): \(data.count) values for \(count)")
        let mspace = H5Screate_simple(Int32(count.count), &count, nil)
        defer { H5Sclose(mspace) }
        let status = data.withUnsafeBytes { H5Dwrite(did, memType, mspace, fspace, jsae_h5p_default(), $0.baseAddress) }
        guard status >= 0 else { throw writeError("cannot write \(name)") }
        closedOK = true
        guard H5Dclose(did) >= 0 else { throw writeError("cannot write \(name)") }
    }

    func memType<T: JSAEScalar>(_ t: T.Type) -> hid_t {
        T.self == Float.self ? jsae_h5t_native_float() : jsae_h5t_native_double()
    }
}
