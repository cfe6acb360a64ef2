import Foundation
import JSAECore

/// An exclusive `flock` on `DIR/.jsae-train.lock`, held for as long as this
/// object lives, so that two training runs never write into the same folder
/// at once (the second is refused before it writes anything). The kernel
/// drops the lock when the process ends, however it ends (kill -9 included),
/// so a stale lock file never blocks a later run.
public final class RunLock {
    public static let fileName = ".jsae-train.lock"
    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit {
        flock(fd, LOCK_UN)
        Foundation.close(fd)
    }

    /// The PID holding `dir`'s lock, if a live run holds it (nothing is
    /// written, and the lock is not kept).
    public static func holder(of dir: String) -> String? {
        let fd = Foundation.open(dir + "/" + fileName, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Foundation.close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 { flock(fd, LOCK_UN); return nil }
        guard errno == EWOULDBLOCK else { return nil }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buf, 31, 0)
        return n > 0 ? String(decoding: buf.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
    }

    /// Takes the lock of `dir` (which must exist) or throws a one-line error
    /// naming the folder and the process holding it.
    public static func acquire(_ dir: String) throws -> RunLock {
        let path = dir + "/" + fileName
        let fd = Foundation.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw JSAEError(file: dir, "cannot create the run lock \(fileName): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            Foundation.close(fd)
            if e == EWOULDBLOCK {
                let pid = n > 0 ? String(decoding: buf.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
                throw JSAEError(file: dir, "another jsae process (pid \(pid)) is writing into this folder; wait for it to finish or choose another --out")
            }
            throw JSAEError(file: dir, "cannot lock \(fileName): \(String(cString: strerror(e)))")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, pid, pid.count, 0)
        return RunLock(fd: fd)
    }
}
