import CHDF5
import JSAECore
import Foundation

/// Root attribute values as the harness reads and writes them.
public enum AttributeValue: Equatable, Sendable, CustomStringConvertible {
    case int(Int)
    case double(Double)
    case string(String)

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .string(let v): return "\"\(v)\""
        }
    }
}

/// The element type class of a dataset, for messages and checks.
public enum ElementClass: Equatable, Sendable {
    case float(bytes: Int)
    case integer(bytes: Int)
    case other(String)

    public var name: String {
        switch self {
        case .float(let b): return "float\(b * 8)"
        case .integer(let b): return "int\(b * 8)"
        case .other(let s): return s
        }
    }
}

/// An open HDF5 file. Every failure throws a `JSAEError` naming the file;
/// HDF5's own error-stack printing is switched off.
public final class HDF5File {
    public let path: String
    let id: hid_t
    private var closed = false

    /// Bytes on disk when opened for reading (0 for files being written).
    var fileSize = 0

    private init(path: String, id: hid_t) { self.path = path; self.id = id }

    deinit { close() }

    /// Closes the file now (flushing it); needed before an atomic rename.
    /// A failed close (a full disk, a file-size limit) is remembered, so that
    /// `atomicWrite` never renames that file into place; `finish()` throws it.
    public func close() {
        if closed { return }
        closed = true
        if H5Fclose(id) < 0 {
            let reason = HDF5File.osReason() ?? "HDF5 could not flush it"
            CloseFailures.record(path, reason)
        }
    }

    /// Flushes and closes a file being written, throwing the OS reason
    /// (e.g. "No space left on device") when the data did not reach the disk.
    public func finish() throws {
        if closed {
            if let r = CloseFailures.take(path) { throw JSAEError(file: path, "cannot be written: \(r)") }
            return
        }
        if H5Fflush(id, H5F_SCOPE_GLOBAL) < 0 {
            let reason = HDF5File.osReason() ?? "HDF5 could not flush it"
            close()
            _ = CloseFailures.take(path)
            throw JSAEError(file: path, "cannot be written: \(reason)")
        }
        close()
        if let r = CloseFailures.take(path) { throw JSAEError(file: path, "cannot be written: \(r)") }
    }

    /// The OS reason HDF5's file driver recorded for the call that just failed.
    static func osReason() -> String? {
        var buf = [CChar](repeating: 0, count: 512)
        jsae_h5_os_reason(&buf, buf.count)
        let s = cStringToString(buf)
        return s.isEmpty ? nil : s
    }

    /// The OS reason for an HDF5 failure, else `errno`'s if it holds one.
    static func reason(errno e: Int32) -> String? {
        if let r = osReason() { return r }
        return e != 0 ? String(cString: strerror(e)) : nil
    }

    private static let setup: Void = { jsae_h5_silence_errors() }()

    /// Installs the executables' guard: a crash inside HDF5 (SIGSEGV, SIGBUS,
    /// SIGABRT on a corrupted file) becomes one line naming the file and exit
    /// status 2; SIGXFSZ is ignored so a write past `ulimit -f` fails cleanly.
    public static func installCrashGuard(program: String) {
        let p = strdup(program)!
        jsae_guard_install(p)
    }

    /// Opens an existing file read-only, with clear errors for a missing,
    /// empty or non-HDF5 file.
    public static func open(_ path: String) throws -> HDF5File {
        _ = setup
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw JSAEError(file: path, "no such file")
        }
        guard !isDir.boolValue else { throw JSAEError(file: path, "is a directory, not an HDF5 file") }
        // Readable at all? (Otherwise HDF5 would call it "not an HDF5 file".)
        // The size is the opened file's (fstat follows a symbolic link, where
        // the path's own attributes would give the link's length).
        let fd = Foundation.open(path, O_RDONLY)
        guard fd >= 0 else { throw JSAEError(file: path, "cannot be read: \(String(cString: strerror(errno)))") }
        var st = stat()
        let statted = fstat(fd, &st)
        Foundation.close(fd)
        guard statted == 0 else { throw JSAEError(file: path, "cannot be read: \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        guard size > 0 else { throw JSAEError(file: path, "is empty (0 bytes), not an HDF5 file") }
        path.withCString { jsae_guard_set_file($0) }
        guard H5Fis_hdf5(path) > 0 else { throw JSAEError(file: path, "is not an HDF5 file (or is truncated or corrupt)") }
        let fid = H5Fopen(path, jsae_h5f_acc_rdonly(), jsae_h5p_default())
        guard fid >= 0 else { throw JSAEError(file: path, "cannot be opened as HDF5 (truncated or corrupt?)") }
        let f = HDF5File(path: path, id: fid)
        f.fileSize = size
        return f
    }

    /// Opens an existing file for reading and writing (attributes, datasets).
    public static func openForUpdate(_ path: String) throws -> HDF5File {
        _ = try open(path)  // the same checks and messages as a read
        errno = 0
        let fid = H5Fopen(path, jsae_h5f_acc_rdwr(), jsae_h5p_default())
        guard fid >= 0 else { throw JSAEError(file: path, "cannot be opened for writing" + (reason(errno: errno).map { ": " + $0 } ?? "")) }
        return HDF5File(path: path, id: fid)
    }

    /// Creates (truncates) a file at `path`. Use `AtomicWrite` for files a
    /// user keeps, so a crash never leaves a half-written file.
    public static func create(_ path: String) throws -> HDF5File {
        _ = setup
        path.withCString { jsae_guard_set_file($0) }
        errno = 0
        let fid = H5Fcreate(path, jsae_h5f_acc_trunc(), jsae_h5p_default(), jsae_h5p_default())
        guard fid >= 0 else { throw JSAEError(file: path, "cannot be created" + (reason(errno: errno).map { ": " + $0 } ?? "")) }
        return HDF5File(path: path, id: fid)
    }


    // MARK: Structure

    /// True when every component of the slash-separated path exists.
    public func exists(_ name: String) -> Bool {
        var partial = ""
        for comp in name.split(separator: "/") {
            partial += "/" + comp
            if H5Lexists(id, partial, jsae_h5p_default()) <= 0 { return false }
        }
        return true
    }

    public enum ObjectKind { case group, dataset }

    /// Every object under `group`, recursively, as (path, kind), sorted by name.
    /// A group reached a second time (a hard link back up the tree, or to a
    /// group already listed) is listed but not entered again, so a group that
    /// contains itself cannot make the walk recurse forever.
    public func walk(_ group: String = "/") -> [(path: String, kind: ObjectKind)] {
        var seen = Set<haddr_t>()
        var oinfo = H5O_info_t()
        let rid = H5Oopen(id, group, jsae_h5p_default())
        if rid >= 0 {
            if H5Oget_info2(rid, &oinfo, UInt32(H5O_INFO_BASIC)) >= 0 { seen.insert(oinfo.addr) }
            H5Oclose(rid)
        }
        return walk(group, seen: &seen, depth: 0)
    }

    private func walk(_ group: String, seen: inout Set<haddr_t>, depth: Int) -> [(path: String, kind: ObjectKind)] {
        var out: [(String, ObjectKind)] = []
        guard depth < 64 else { return [] }
        let gid = H5Gopen2(id, group, jsae_h5p_default())
        guard gid >= 0 else { return [] }
        defer { H5Gclose(gid) }
        var info = H5G_info_t()
        guard H5Gget_info(gid, &info) >= 0 else { return [] }
        var names: [String] = []
        // A corrupted header may declare any number of links: list at most
        // what a real file of this size could hold, each name bounded too.
        let maxLinks = hsize_t(max(fileSize, 1 << 20) / 8)
        for i in 0..<min(info.nlinks, maxLinks) {
            let n = H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, jsae_h5p_default())
            guard n >= 0 && n < 65536 else { continue }
            var buf = [CChar](repeating: 0, count: Int(n) + 1)
            H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, Int(n) + 1, jsae_h5p_default())
            names.append(cStringToString(buf))
        }
        for name in names {
            let full = (group == "/" ? "" : group) + "/" + name
            let oid = H5Oopen(id, full, jsae_h5p_default())
            guard oid >= 0 else { continue }
            let type = H5Iget_type(oid)
            var oinfo = H5O_info_t()
            let known = H5Oget_info2(oid, &oinfo, UInt32(H5O_INFO_BASIC)) >= 0
            H5Oclose(oid)
            if type == H5I_GROUP {
                out.append((full, .group))
                guard known, seen.insert(oinfo.addr).inserted else { continue }
                out.append(contentsOf: walk(full, seen: &seen, depth: depth + 1))
            } else if type == H5I_DATASET {
                out.append((full, .dataset))
            }
        }
        return out
    }

    // MARK: Datasets

    private func openDataset(_ name: String) throws -> hid_t {
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

    private func shape(of did: hid_t, _ name: String) throws -> [Int] {
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
    private func requireMemory(_ name: String, shape: [Int], bytesPerElement: Int) throws {
        let (bytes, o) = shape.reduce(1, *).multipliedReportingOverflow(by: bytesPerElement)
        let limit = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        guard !o && bytes <= limit else {
            throw JSAEError(file: path, "\(name) has shape \(Self.describe(shape)): reading it would need \(o ? "more than \(Int.max)" : String(bytes)) bytes, more than this machine's \(limit)")
        }
    }

    private func elementClass(of did: hid_t) -> ElementClass {
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

    private func check(_ name: String, shape: [Int], expected: [Int?]?) throws {
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
    private func openForReading(_ name: String, expected: [Int?]?, bytesPerElement: Int, wanted: String,
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
        var data = [T](repeating: 0, count: count)
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
    private func readRowSlab(_ did: hid_t, as type: hid_t, _ fspace: hid_t, rows: Range<Int>, cols: Int,
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
    private func isIEEEHalf(_ type: hid_t) -> Bool {
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

    private func linkCreateProps() -> hid_t {
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

    private func createDataset(_ name: String, shape: [Int], fileType: hid_t) throws {
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
    private func writeError(_ what: String) -> JSAEError {
        JSAEError(file: path, what + ": " + (HDF5File.osReason() ?? "HDF5 reported a write error"))
    }

    private func writeSlab<E>(_ name: String, firstDimRange range: Range<Int>, data: [E], memType: hid_t) throws {
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

    private func memType<T: JSAEScalar>(_ t: T.Type) -> hid_t {
        T.self == Float.self ? jsae_h5t_native_float() : jsae_h5t_native_double()
    }

    // MARK: Attributes

    /// Names of the attributes on an object (root by default).
    public func attributeNames(on object: String = "/") -> [String] {
        let oid = H5Oopen(id, object, jsae_h5p_default())
        guard oid >= 0 else { return [] }
        defer { H5Oclose(oid) }
        let n = min(Int(H5Aget_num_attrs(oid)), 4096)   // a corrupted header may claim any count
        var names: [String] = []
        for i in 0..<max(n, 0) {
            let aid = H5Aopen_by_idx(oid, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, hsize_t(i), jsae_h5p_default(), jsae_h5p_default())
            let aid2 = aid >= 0 ? aid : H5Aopen_by_idx(oid, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(i), jsae_h5p_default(), jsae_h5p_default())
            guard aid2 >= 0 else { continue }
            let len = H5Aget_name(aid2, 0, nil)
            guard len >= 0 && len < 65536 else { H5Aclose(aid2); continue }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            H5Aget_name(aid2, Int(len) + 1, &buf)
            names.append(cStringToString(buf))
            H5Aclose(aid2)
        }
        return names.sorted()
    }

    /// Reads a scalar attribute (integer, float or string), or nil if absent.
    public func attribute(_ name: String, on object: String = "/") throws -> AttributeValue? {
        path.withCString { jsae_guard_set_file($0) }
        guard H5Aexists_by_name(id, object, name, jsae_h5p_default()) > 0 else { return nil }
        let aid = H5Aopen_by_name(id, object, name, jsae_h5p_default(), jsae_h5p_default())
        guard aid >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be opened") }
        defer { H5Aclose(aid) }
        let tid = H5Aget_type(aid)
        defer { H5Tclose(tid) }
        let sid = H5Aget_space(aid)
        defer { H5Sclose(sid) }
        let npoints = H5Sget_simple_extent_npoints(sid)
        guard npoints == 1 else { throw JSAEError(file: path, "attribute \(name) holds \(npoints) values, expected one") }
        switch H5Tget_class(tid) {
        case H5T_INTEGER:
            var v: Int64 = 0
            guard H5Aread(aid, jsae_h5t_native_int64(), &v) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
            return .int(Int(v))
        case H5T_FLOAT:
            var v: Double = 0
            guard H5Aread(aid, jsae_h5t_native_double(), &v) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
            return .double(v)
        case H5T_STRING:
            if H5Tis_variable_str(tid) > 0 {
                let mt = H5Tcopy(jsae_h5t_c_s1())
                defer { H5Tclose(mt) }
                H5Tset_size(mt, jsae_h5t_variable())
                H5Tset_cset(mt, H5Tget_cset(tid))
                var p: UnsafeMutablePointer<CChar>? = nil
                guard H5Aread(aid, mt, &p) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
                defer { if let p { H5free_memory(p) } }
                return .string(p.map { String(cString: $0) } ?? "")
            } else {
                let size = Int(H5Tget_size(tid))
                guard size > 0 && size <= 1 << 20 else { throw JSAEError(file: path, "attribute \(name) declares a string of \(size) bytes (corrupt?)") }
                var buf = [CChar](repeating: 0, count: size + 1)
                let mt = H5Tcopy(tid)
                defer { H5Tclose(mt) }
                guard H5Aread(aid, mt, &buf) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
                return .string(cStringToString(buf))
            }
        default:
            throw JSAEError(file: path, "attribute \(name) has an unsupported type")
        }
    }

    /// Writes (replacing) a scalar attribute. Strings are variable-length
    /// UTF-8, as h5py writes a Python str.
    public func setAttribute(_ name: String, _ value: AttributeValue, on object: String = "/") throws {
        if H5Aexists_by_name(id, object, name, jsae_h5p_default()) > 0 {
            guard H5Adelete_by_name(id, object, name, jsae_h5p_default()) >= 0 else { throw writeError("cannot replace attribute \(name)") }
        }
        let sid = H5Screate(H5S_SCALAR)
        defer { H5Sclose(sid) }
        var status: herr_t = -1
        switch value {
        case .int(let v):
            let aid = H5Acreate_by_name(id, object, name, jsae_h5t_std_i64le(), sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            var x = Int64(v)
            if aid >= 0 { status = H5Awrite(aid, jsae_h5t_native_int64(), &x); if H5Aclose(aid) < 0 { status = -1 } }
        case .double(let v):
            let aid = H5Acreate_by_name(id, object, name, jsae_h5t_ieee_f64le(), sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            var x = v
            if aid >= 0 { status = H5Awrite(aid, jsae_h5t_native_double(), &x); if H5Aclose(aid) < 0 { status = -1 } }
        case .string(let v):
            let tid = H5Tcopy(jsae_h5t_c_s1())
            defer { H5Tclose(tid) }
            H5Tset_size(tid, jsae_h5t_variable())
            H5Tset_cset(tid, H5T_CSET_UTF8)
            let aid = H5Acreate_by_name(id, object, name, tid, sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            if aid >= 0 {
                status = v.withCString { cs -> herr_t in
                    var p: UnsafePointer<CChar>? = cs
                    return H5Awrite(aid, tid, &p)
                }
                if H5Aclose(aid) < 0 { status = -1 }
            }
        }
        guard status >= 0 else { throw writeError("cannot write attribute \(name)") }
    }

    // MARK: Typed attribute helpers

    public func intAttribute(_ name: String) throws -> Int? {
        switch try attribute(name) {
        case nil: return nil
        case .int(let v): return v
        // A float is accepted only when it is a whole number an Int can hold
        // (h5py may store 5.0); 1e300, inf and NaN are refused here, before
        // any conversion could trap.
        case .double(let v) where v.isFinite && v == v.rounded() && abs(v) < 9.0e18: return Int(v)
        case .double(let v): throw JSAEError(file: path, "root attribute \(name) is \(v), expected an integer (between -9e18 and 9e18)")
        default: throw JSAEError(file: path, "root attribute \(name) must be an integer")
        }
    }

    public func doubleAttribute(_ name: String) throws -> Double? {
        switch try attribute(name) {
        case nil: return nil
        case .int(let v): return Double(v)
        case .double(let v): return v
        case .string: throw JSAEError(file: path, "root attribute \(name) must be a number")
        }
    }

    public func stringAttribute(_ name: String) throws -> String? {
        switch try attribute(name) {
        case nil: return nil
        case .string(let s): return s
        default: throw JSAEError(file: path, "root attribute \(name) must be a string")
        }
    }
}

/// A NUL-terminated C buffer as a String (up to the first NUL).
func cStringToString(_ buf: [CChar]) -> String {
    let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

/// Paths whose HDF5 close failed (data not on disk), with the OS reason, so
/// that an atomic write never renames such a file into place.
enum CloseFailures {
    nonisolated(unsafe) private static var failures: [String: String] = [:]
    private static let lock = NSLock()
    static func record(_ path: String, _ reason: String) { lock.lock(); failures[path] = reason; lock.unlock() }
    static func take(_ path: String) -> String? { lock.lock(); defer { lock.unlock() }; return failures.removeValue(forKey: path) }
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
