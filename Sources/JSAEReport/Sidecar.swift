import Foundation
import JSAECore
import JSAEIO

/// The optional sidecar `A.h5.tokens.json` ({"tokens": [...], "documents":
/// [...]}, one entry per row of /x). Absent: nil. Present but unreadable or
/// with a different number of rows: an error naming it, raised before any
/// training (the report would otherwise index past its end at the very end).
func readTokenSidecar(for reader: ActivationsReader) throws -> (tokens: [String], documents: [Int])? {
    let path = reader.path + ".tokens.json"
    guard FileManager.default.fileExists(atPath: path) else { return nil }
    let data: Data
    do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
        throw JSAEError(file: path, "cannot be read: \((error as NSError).localizedDescription)")
    }
    guard let obj = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
        throw JSAEError(file: path, "is not a JSON object with \"tokens\" and \"documents\"")
    }
    guard let tokens = obj["tokens"] as? [String], let docs = obj["documents"] as? [Int] else {
        throw JSAEError(file: path, "needs \"tokens\" (strings) and \"documents\" (integers)")
    }
    guard tokens.count == reader.tokens, docs.count == reader.tokens else {
        throw JSAEError(file: path, "has \(tokens.count) tokens and \(docs.count) documents but \(reader.path) has \(reader.tokens) rows")
    }
    return (tokens, docs)
}
