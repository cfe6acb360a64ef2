import Foundation
import JSAECore

/// Locating the golden files written by `golden/generate.py`, with a one-line
/// hint when one is missing or was made by another version of the script.
public enum Golden {
    public static let script = "golden/generate.py"

    /// Opens `golden/<case>/<name>` under `root` and checks its
    /// `golden_version`; throws a one-line error naming the script to rerun.
    public static func path(root: String, case name: String, file: String, expectedVersion: Int) throws -> String {
        let rel = "golden/\(name)/\(file)"
        let full = root + "/" + rel
        guard FileManager.default.fileExists(atPath: full) else {
            throw JSAEError(file: rel, "golden file is missing: run `python \(script)` (see golden/README.md)")
        }
        let f = try HDF5File.open(full)
        let v = try f.intAttribute("golden_version")
        guard v == expectedVersion else {
            throw JSAEError(file: rel, "golden file is stale (golden_version \(v.map(String.init) ?? "none"), tests expect \(expectedVersion)): rerun `python \(script)` (see golden/README.md)")
        }
        return full
    }
}
