import Foundation
import JSAECore

/// The first key that occurs twice in one object of a JSON text already
/// known to be valid, decoded (so "a" and "\\u0061" are the same key).
func duplicateKey(in b: UnsafeRawBufferPointer) -> String? {
    var keysStack: [Set<String>?] = []   // nil for an array
    var expectKey = false
    var i = 0
    while i < b.count {
        switch b[i] {
        case UInt8(ascii: "{"): keysStack.append([]); expectKey = true
        case UInt8(ascii: "["): keysStack.append(nil); expectKey = false
        case UInt8(ascii: "}"), UInt8(ascii: "]"): if !keysStack.isEmpty { keysStack.removeLast() }; expectKey = false
        case UInt8(ascii: ","): expectKey = keysStack.last.map { $0 != nil } ?? false
        case UInt8(ascii: "\""):
            var j = i + 1
            while j < b.count && b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
            let end = min(j, b.count - 1)
            if expectKey, !keysStack.isEmpty, keysStack[keysStack.count - 1] != nil {
                let literal = Data(b[i...end])
                let key = (try? JSONSerialization.jsonObject(with: literal, options: .fragmentsAllowed)) as? String
                    ?? String(decoding: literal, as: UTF8.self)
                if !keysStack[keysStack.count - 1]!.insert(key).inserted { return key }
                expectKey = false
            }
            i = end
        default: break
        }
        i += 1
    }
    return nil
}

/// Writes `bytes` to `path` (created or truncated), checking every write and the close.
func writeChecked(_ bytes: [UInt8], to path: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw JSAEError(file: path, "cannot be created: \(String(cString: strerror(errno)))") }
    var written = 0
    while written < bytes.count {
        let r = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
        if r < 0 && errno == EINTR { continue }
        guard r > 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw JSAEError(file: path, "cannot be written: \(reason)")
        }
        written += r
    }
    guard fsync(fd) == 0 else { let reason = String(cString: strerror(errno)); close(fd); throw JSAEError(file: path, "cannot be written: \(reason)") }
    guard close(fd) == 0 else { throw JSAEError(file: path, "cannot be written: \(String(cString: strerror(errno)))") }
}

/// The OS reason inside a Foundation error, or its description.
func osReason(_ error: Error) -> String {
    let ns = error as NSError
    let posix = (ns.userInfo[NSUnderlyingErrorKey] as? NSError).flatMap { $0.domain == NSPOSIXErrorDomain ? Int32($0.code) : nil }
        ?? (ns.domain == NSPOSIXErrorDomain ? Int32(ns.code) : nil)
    return posix.map { String(cString: strerror($0)) } ?? ns.localizedDescription
}

/// A JSON string literal for `s`.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        // Control characters and the Unicode line breaks, so a quoted value never breaks a line.
        case _ where u.value < 0x20 || u.value == 0x85 || u.value == 0x2028 || u.value == 0x2029:
            out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// A string from a file, quoted for a one-line message (escaped as JSON,
/// at most 80 characters of it).
func quoted(_ s: String) -> String {
    jsonString(s.count > 80 ? String(s.prefix(80)) + "…" : s)
}
