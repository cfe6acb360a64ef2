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
