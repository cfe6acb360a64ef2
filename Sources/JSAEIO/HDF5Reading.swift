import CHDF5
import JSAECore
import Foundation

extension HDF5File {
    // MARK: Datasets

    func openDataset(_ name: String) throws -> hid_t {
        path.withCString { jsae_guard_set_file($0) }   // the file a crash inside HDF5 would be reported for
        guard exists(name) else { throw JSAEError(file: path, "missing dataset \(name)") }
        let did = H5Dopen2(id, name, jsae_h5p_default())
        guard did >= 0 else { throw JSAEError(file: path, "\(name) is not a dataset") }
        return did
    }

    /// Checks that dataset `name` really holds the data its shape declares
    /// (see `requireStored(_:_:shape:)`); for datasets that are streamed.
    public func requireStored(_ name: String) throws {
        let did = try openDataset(name)
        defer { H5Dclose(did) }
        try requireStored(did, name, shape: try shape(of: did, name))
    }

    /// Shape and element class of a dataset.
    public func info(_ name: String) throws -> (shape: [Int], element: ElementClass) {
        let did = try openDataset(name)
        defer { H5Dclose(did) }
        return (try shape(of: did, name), elementClass(of: did))
    }

    func shape(of did: hid_t, _ name: String) throws -> [Int] {
        let sid = H5Dget_space(did)
        guard sid >= 0 else { throw JSAEError(file: path, "\(name) has an unreadable shape") }
        defer { H5Sclose(sid) }
        let rank = Int(H5Sget_simple_extent_ndims(sid))
        guard rank >= 0 && rank <= 32 else { throw JSAEError(file: path, "\(name) has an unreadable shape") }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        guard H5Sget_simple_extent_dims(sid, &dims, nil) >= 0 else { throw JSAEError(file: path, "\(name) has an unreadable shape") }
        let shape = rank == 0 ? [] : dims.prefix(rank).map { Int(clamping: $0) }
        // The element count must be a number this machine can even index.
        var count = 1
        for (i, d) in dims.prefix(rank).enumerated() {
            guard d <= hsize_t(Int.max) else { throw JSAEError(file: path, "\(name) declares dimension \(i) of \(d), beyond \(Int.max)") }
            let (p, o) = count.multipliedReportingOverflow(by: Int(d))
            guard !o else { throw JSAEError(file: path, "\(name) declares shape \(Self.describe(shape)), whose element count overflows a 64-bit integer") }
            count = p
        }
        return shape
    }

    /// Checks that a dataset's declared size is backed by data actually in
    /// the file before anything is allocated or read for it: a contiguous
    /// dataset must have its bytes inside the file, a chunked one every chunk
    /// written. A file that merely declares a huge shape is refused at once.
    func requireStored(_ did: hid_t, _ name: String, shape: [Int]) throws {
        let count = shape.reduce(1, *)   // checked by shape(of:)
        guard count > 0 else { return }
        let dcpl = H5Dget_create_plist(did)
        guard dcpl >= 0 else { throw JSAEError(file: path, "\(name) has an unreadable layout (corrupt?)") }
        defer { H5Pclose(dcpl) }
        switch H5Pget_layout(dcpl) {
        case H5D_CHUNKED:
            var cdims = [hsize_t](repeating: 0, count: 32)
            let crank = Int(H5Pget_chunk(dcpl, 32, &cdims))
            guard crank == shape.count, cdims.prefix(crank).allSatisfy({ $0 > 0 }) else {
                throw JSAEError(file: path, "\(name) has an unreadable chunk layout (corrupt?)")
            }
            var expected = 1
            for (d, c) in zip(shape, cdims.prefix(crank)) {
                let (p, o) = expected.multipliedReportingOverflow(by: (d + Int(c) - 1) / Int(c))
                guard !o else { throw JSAEError(file: path, "\(name) declares shape \(Self.describe(shape)) with more chunks than can be counted") }
                expected = p
            }
            let written = jsae_h5d_num_chunks(did)
            guard written >= 0 else { throw JSAEError(file: path, "\(name): its chunk index cannot be read (corrupt?)") }
            guard written >= expected else {
                throw JSAEError(file: path, "\(name) declares shape \(Self.describe(shape)) but only \(written) of its \(expected) chunks hold data")
            }
        case H5D_CONTIGUOUS:
            let stored = H5Dget_storage_size(did)
            let offset = H5Dget_offset(did)
            let tid = H5Dget_type(did)
            let bytes = Int(H5Tget_size(tid))
            H5Tclose(tid)
            let (need, o) = count.multipliedReportingOverflow(by: max(bytes, 1))
            guard !o else { throw JSAEError(file: path, "\(name) declares shape \(Self.describe(shape)), more bytes than can be counted") }
            guard stored > 0, offset != haddr_t.max else {
                throw JSAEError(file: path, "\(name) declares shape \(Self.describe(shape)) but holds no data")
            }
            if fileSize > 0 {
                let (end, o2) = Int(clamping: offset).addingReportingOverflow(need)
                guard !o2 && end <= fileSize else {
                    throw JSAEError(file: path, "\(name) declares \(need) bytes at offset \(offset) but the file has only \(fileSize) bytes (truncated or corrupt)")
                }
            }
        default:
            break   // compact: the data is in the object header itself
        }
    }

    /// Refuses a whole-dataset read that would need more memory than the
    /// machine has, before allocating it.
    func requireMemory(_ name: String, shape: [Int], bytesPerElement: Int) throws {
        let (bytes, o) = shape.reduce(1, *).multipliedReportingOverflow(by: bytesPerElement)
        let limit = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        guard !o && bytes <= limit else {
            throw JSAEError(file: path, "\(name) has shape \(Self.describe(shape)): reading it would need \(o ? "more than \(Int.max)" : String(bytes)) bytes, more than this machine's \(limit)")
        }
    }

    func elementClass(of did: hid_t) -> ElementClass {
        let tid = H5Dget_type(did)
        defer { H5Tclose(tid) }
        let bytes = Int(H5Tget_size(tid))
        switch H5Tget_class(tid) {
        case H5T_FLOAT: return .float(bytes: bytes)
        case H5T_INTEGER: return .integer(bytes: bytes)
        case H5T_STRING: return .other("string")
        case H5T_COMPOUND: return .other("compound")
        default: return .other("non-numeric")
        }
    }

    /// Checks a shape against an expectation; `nil` entries match any size.
    public static func describe(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

    func check(_ name: String, shape: [Int], expected: [Int?]?) throws {
        guard let expected else { return }
        let ok = shape.count == expected.count && zip(shape, expected).allSatisfy { $1 == nil || $0 == $1! }
        if !ok {
            let exp = "[" + expected.map { $0.map(String.init) ?? "*" }.joined(separator: ", ") + "]"
            throw JSAEError(file: path, "\(name) has shape \(Self.describe(shape)), expected \(exp)")
        }
    }

    /// Opens dataset `name` for a whole read after checking, before anything
    /// is allocated, its element class, its shape against `expected`, that it
    /// fits in memory and that its data is really stored. The caller closes
    /// the returned id.
    func openForReading(_ name: String, expected: [Int?]?, bytesPerElement: Int, wanted: String,
                                _ isWanted: (ElementClass) -> Bool) throws -> (hid_t, [Int]) {
        let did = try openDataset(name)
        do {
            let shape = try shape(of: did, name)
            guard isWanted(elementClass(of: did)) else {
                throw JSAEError(file: path, "\(name) has dtype \(elementClass(of: did).name), expected \(wanted)")
            }
            try check(name, shape: shape, expected: expected)
            try requireMemory(name, shape: shape, bytesPerElement: bytesPerElement)
            try requireStored(did, name, shape: shape)
            return (did, shape)
        } catch {
            H5Dclose(did)
            throw error
        }
    }

    /// Reads a whole floating dataset (float16/32/64 on disk, converted by
    /// HDF5 to T). Rejects integer or string data and wrong shapes.
    public func readFloats<T: JSAEScalar>(_ name: String, as: T.Type = T.self,
                                          shape expected: [Int?]? = nil) throws -> (shape: [Int], data: [T]) {
        let (did, shape) = try openForReading(name, expected: expected, bytesPerElement: MemoryLayout<T>.size,
                                              wanted: "a floating type (float16, float32 or float64)") { if case .float = $0 { true } else { false } }
        defer { H5Dclose(did) }
        let count = shape.reduce(1, *)
        var data = [T](zeros: count)
        if count > 0 {
            let status = data.withUnsafeMutableBytes { H5Dread(did, memType(T.self), jsae_h5s_all(), jsae_h5s_all(), jsae_h5p_default(), $0.baseAddress) }
            guard status >= 0 else { throw JSAEError(file: path, "\(name) could not be read (truncated or corrupt?)") }
        }
        return (shape, data)
    }

    /// Reads a 2-D floating dataset as a matrix.
    public func readMatrix<T: JSAEScalar>(_ name: String, as: T.Type = T.self, rows: Int? = nil, cols: Int? = nil) throws -> Matrix<T> {
        let (shape, data) = try readFloats(name, as: T.self, shape: [rows, cols])
        return Matrix(rows: shape[0], cols: shape[1], data: data)
    }

    /// Reads a 1-D floating dataset.
    public func readVector<T: JSAEScalar>(_ name: String, as: T.Type = T.self, count: Int? = nil) throws -> [T] {
        try readFloats(name, as: T.self, shape: [count]).data
    }

    /// Reads rows `range` of a 2-D floating dataset (a hyperslab), so that a
    /// dataset larger than memory can be streamed.
    public func readRows<T: JSAEScalar>(_ name: String, _ range: Range<Int>, as: T.Type = T.self) throws -> Matrix<T> {
        let did = try openDataset(name)
        defer { H5Dclose(did) }
        let shape = try shape(of: did, name)
        guard shape.count == 2 else { throw JSAEError(file: path, "\(name) has shape \(Self.describe(shape)), expected 2 dimensions") }
        guard case .float = elementClass(of: did) else {
            throw JSAEError(file: path, "\(name) has dtype \(elementClass(of: did).name), expected a floating type (float16, float32 or float64)")
        }
        guard range.lowerBound >= 0 && range.upperBound <= shape[0] else {
            throw JSAEError(file: path, "rows \(range) are outside \(name) with \(shape[0]) rows")
        }
        var m = Matrix<T>(rows: range.count, cols: shape[1])
        if m.count == 0 { return m }
        let fspace = H5Dget_space(did)
        defer { H5Sclose(fspace) }
        var start: [hsize_t] = [hsize_t(range.lowerBound), 0]
        var count: [hsize_t] = [hsize_t(range.count), hsize_t(shape[1])]
        guard fspace >= 0, H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nil, &count, nil) >= 0 else {
            throw JSAEError(file: path, "\(name) rows \(range) cannot be selected (corrupt?)")
        }
        let ftype = H5Dget_type(did)
        defer { if ftype >= 0 { H5Tclose(ftype) } }
        let cols = shape[1]
        var status: herr_t = ftype >= 0 ? 0 : -1
        if status >= 0 && isIEEEHalf(ftype) {
            // HDF5 1.10 converts binary16 to float in software, bit field by
            // bit field (H5T__conv_f_f): it took about a sixth of a
            // reproduction's wall time. The file's own type is read as it is
            // and widened here, exactly as HDF5 would (every binary16 value,
            // subnormals, ±0 and ±Inf included, is a Float and a Double).
            // In slabs of about 1M entries, so the staging buffer stays at
            // 2 MiB whatever the range.
            let slabRows = max(1, (1 << 20) / cols)
            var half = [UInt16](repeating: 0, count: min(range.count, slabRows) * cols)
            var first = 0
            while status >= 0 && first < range.count {
                let n = min(slabRows, range.count - first)
                status = half.withUnsafeMutableBytes {
                    readRowSlab(did, as: ftype, fspace, rows: (range.lowerBound + first)..<(range.lowerBound + first + n), cols: cols, into: $0.baseAddress!)
                }
                if status >= 0 {
                    m.data.withUnsafeMutableBufferPointer { widenHalf(half[0..<(n * cols)], into: UnsafeMutableBufferPointer(rebasing: $0[(first * cols)..<((first + n) * cols)])) }
                }
                first += n
            }
        } else if status >= 0 {
            status = m.data.withUnsafeMutableBytes { readRowSlab(did, as: memType(T.self), fspace, rows: range, cols: cols, into: $0.baseAddress!) }
        }
        guard status >= 0 else { throw JSAEError(file: path, "\(name) rows \(range) could not be read (truncated or corrupt?)") }
        return m
    }

    /// Reads `rows` (all `cols` columns) of dataset `did`, whose file space is
    /// `fspace`, into `buffer` as memory type `type`. HDF5's status: < 0 failed.
    func readRowSlab(_ did: hid_t, as type: hid_t, _ fspace: hid_t, rows: Range<Int>, cols: Int,
                             into buffer: UnsafeMutableRawPointer) -> herr_t {
        var start: [hsize_t] = [hsize_t(rows.lowerBound), 0], count: [hsize_t] = [hsize_t(rows.count), hsize_t(cols)]
        let mspace = H5Screate_simple(2, &count, nil)
        guard mspace >= 0 else { return -1 }
        defer { H5Sclose(mspace) }
        guard H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nil, &count, nil) >= 0 else { return -1 }
        return H5Dread(did, type, mspace, fspace, jsae_h5p_default(), buffer)
    }

    /// Whether a dataset type is IEEE binary16 in this machine's byte order
    /// (how h5py stores float16 on a little-endian machine), so that its
    /// bytes are Float16 bit patterns.
    func isIEEEHalf(_ type: hid_t) -> Bool {
        let half = jsae_h5t_make_f16le()
        defer { H5Tclose(half) }
        return half >= 0 && H5Tequal(type, half) > 0 && UInt16(littleEndian: 1) == 1
    }

    /// Reads an integer dataset (any integer width on disk) as Int.
    public func readInts(_ name: String, shape expected: [Int?]? = nil) throws -> (shape: [Int], data: [Int]) {
        let (did, shape) = try openForReading(name, expected: expected, bytesPerElement: 8,
                                              wanted: "an integer type (int64)") { if case .integer = $0 { true } else { false } }
        defer { H5Dclose(did) }
        var data = [Int64](repeating: 0, count: shape.reduce(1, *))
        if !data.isEmpty {
            let status = data.withUnsafeMutableBytes { H5Dread(did, jsae_h5t_native_int64(), jsae_h5s_all(), jsae_h5s_all(), jsae_h5p_default(), $0.baseAddress) }
            guard status >= 0 else { throw JSAEError(file: path, "\(name) could not be read (truncated or corrupt?)") }
        }
        return (shape, data.map { Int($0) })
    }
}

/// Float16 bit patterns widened to T, entry by entry (exact: every binary16
/// value is a Float and a Double).
func widenHalf<T: JSAEScalar>(_ half: ArraySlice<UInt16>, into out: UnsafeMutableBufferPointer<T>) {
    precondition(half.count == out.count)
    half.withUnsafeBufferPointer { h in
        if T.self == Float.self {
            let o = UnsafeMutableRawPointer(out.baseAddress!).assumingMemoryBound(to: Float.self)
            for i in h.indices { o[i] = Float(Float16(bitPattern: h[i])) }
        } else {
            for i in h.indices { out[i] = T(Float(Float16(bitPattern: h[i]))) }
        }
    }
}
