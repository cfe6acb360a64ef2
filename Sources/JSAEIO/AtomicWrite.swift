import Foundation
import JSAECore

/// Writes a file under a temporary name in the same folder and renames it
/// into place only when `body` succeeded, so a crash or an error never leaves
/// a half-written file under the final name (and never clobbers a good one).
///
/// "Succeeded" includes the data reaching the disk: an HDF5 file at the
/// temporary name whose close failed (full disk, `ulimit -f`) is not renamed,
/// and the error names the user's path with the OS reason, never the
/// temporary name.
public func atomicWrite<R>(to path: String, _ body: (_ tempPath: String) throws -> R) throws -> R {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    try requireFolder(dir, for: path)
    let temp = dir + "/." + url.lastPathComponent + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
    do {
        let result = try body(temp)
        if let reason = CloseFailures.take(temp) {
            throw JSAEError(file: temp, "cannot be written: \(reason)")
        }
        guard rename(temp, path) == 0 else {
            throw JSAEError(file: path, "cannot be put in place: \(String(cString: strerror(errno)))")
        }
        return result
    } catch let e as JSAEError {
        unlink(temp)
        _ = CloseFailures.take(temp)
        throw e.file == temp || e.message.contains(temp)
            ? JSAEError(file: path, e.message.replacingOccurrences(of: temp, with: path) + previousNote(path))
            : e
    } catch {
        unlink(temp)
        _ = CloseFailures.take(temp)
        // Foundation's own write errors (a JSON or PNG file): the OS reason.
        // Any other error is the caller's own, passed on unchanged.
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { throw error }
        let posix = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).flatMap { $0.domain == NSPOSIXErrorDomain ? Int32($0.code) : nil }
        let reason = posix.map { String(cString: strerror($0)) } ?? ns.localizedDescription
        throw JSAEError(file: path, "cannot be written: \(reason)" + previousNote(path))
    }
}

/// What the user needs to know after a failed write: whether an older file
/// under that name is still there, untouched.
private func previousNote(_ path: String) -> String {
    FileManager.default.fileExists(atPath: path) ? " (the existing file is unchanged)" : ""
}

/// Writes `data` to `path` atomically (a temporary name, a checked close, a rename).
public func atomicWrite(_ data: Data, to path: String) throws {
    try atomicWrite(to: path) { try data.write(to: URL(fileURLWithPath: $0)) }
}

/// Checks that `dir` exists and is a folder, naming the first path component
/// that is a file or missing (instead of a Foundation error dump).
public func requireFolder(_ dir: String, for path: String) throws {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
        guard isDir.boolValue else { throw JSAEError(file: path, "\(dir) is a file, not a folder") }
        return
    }
    throw JSAEError(file: path, "the folder \(dir) does not exist")
}

/// Checks, without creating anything, that `dir` is a folder or could be
/// created (its deepest existing ancestor is a folder): a command validates
/// its output path before any work. Returns whether it exists already.
@discardableResult
public func requireCreatableFolder(_ dir: String) throws -> Bool {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
        guard isDir.boolValue else { throw JSAEError(file: dir, "is a file, not a folder") }
        return true
    }
    // Walk up to the deepest existing ancestor: is it a folder?
    var url = URL(fileURLWithPath: dir).standardizedFileURL
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) {
            guard isDir.boolValue else { throw JSAEError(file: dir, "cannot be created: \(url.path) is a file, not a folder") }
            break
        }
    }
    return false
}

/// Creates `dir` (and its parents) for output, with one clear line when it
/// cannot be: the component that is a file, or the OS reason.
public func createOutputFolder(_ dir: String) throws {
    guard try !requireCreatableFolder(dir) else { return }
    do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
        let ns = error as NSError
        let posix = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).flatMap { $0.domain == NSPOSIXErrorDomain ? Int32($0.code) : nil }
        throw JSAEError(file: dir, "cannot be created: " + (posix.map { String(cString: strerror($0)) } ?? ns.localizedDescription))
    }
}

/// Removes `.NAME.tmp-PID` files that a process killed mid-write (kill -9,
/// power loss) left in `dir`, when that PID is no longer running. Files of a
/// live process (perhaps writing right now) are left alone. Returns the
/// names removed.
@discardableResult
public func removeStaleTemporaries(in dir: String) -> [String] {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
    var removed: [String] = []
    for name in names where name.hasPrefix(".") {
        guard let r = name.range(of: ".tmp-", options: .backwards),
              let pid = Int32(name[r.upperBound...]), pid > 0 else { continue }
        // kill(pid, 0) fails with ESRCH only when no such process exists.
        if kill(pid, 0) == 0 || errno != ESRCH { continue }
        if unlink(dir + "/" + name) == 0 { removed.append(name) }
    }
    return removed
}
