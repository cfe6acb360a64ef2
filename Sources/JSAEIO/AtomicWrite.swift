import Foundation
import JSAECore

/// Writes a file under a temporary name in the same folder and renames it
/// into place only when `body` succeeded, so a crash or an error never leaves
/// a half-written file under the final name (and never clobbers a good one).
public func atomicWrite<R>(to path: String, _ body: (_ tempPath: String) throws -> R) throws -> R {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
        throw JSAEError(file: path, "the folder \(dir) does not exist")
    }
    let temp = dir + "/." + url.lastPathComponent + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
    do {
        let result = try body(temp)
        guard rename(temp, path) == 0 else {
            throw JSAEError(file: path, "cannot rename \(temp) into place: \(String(cString: strerror(errno)))")
        }
        return result
    } catch {
        unlink(temp)
        throw error
    }
}
