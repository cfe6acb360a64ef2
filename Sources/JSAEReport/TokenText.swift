import Foundation
import JSAECore
import JSAEIO

/// The token text of an activations file's rows, for the report's examples:
/// from `/text` (exporter v2: ids, documents and the vocabulary, read once)
/// or from the v1 sidecar `A.h5.tokens.json` ({"tokens": [...],
/// "documents": [...]}, one entry per row of /x). Neither: nil.
/// Present but unreadable, or with a different number of rows: an error
/// naming it, raised before any training (the report would otherwise index
/// past its end at the very end).
struct TokenText {
    private let ids: [Int]
    private let vocab: [String]
    let documents: [Int]
    var count: Int { ids.count }
    func token(_ row: Int) -> String { vocab[ids[row]] }

    static func read(for reader: ActivationsReader) throws -> TokenText? {
        if reader.file.exists("/text/ids") { return try fromText(reader) }
        return try fromSidecar(reader)
    }

    private static func fromText(_ r: ActivationsReader) throws -> TokenText {
        let f = r.file
        let ids = try f.readInts("/text/ids", shape: [r.tokens]).data
        let docs = try f.readInts("/text/doc", shape: [r.tokens]).data
        let offsets = try f.readInts("/text/vocab_offsets", shape: [nil]).data
        let bytes = try f.readInts("/text/vocab_utf8", shape: [nil]).data
        guard offsets.count >= 2, offsets.first == 0, offsets.last == bytes.count,
              zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw JSAEError(file: r.path, "/text/vocab_offsets is not an ascending list from 0 to the length of /text/vocab_utf8 (\(bytes.count))")
        }
        guard bytes.allSatisfy({ (0...255).contains($0) }) else { throw JSAEError(file: r.path, "/text/vocab_utf8 holds values outside 0…255") }
        let vocab = (0..<(offsets.count - 1)).map { i in
            String(decoding: bytes[offsets[i]..<offsets[i + 1]].map { UInt8($0) }, as: UTF8.self)
        }
        if let i = ids.firstIndex(where: { $0 < 0 || $0 >= vocab.count }) {
            throw JSAEError(file: r.path, "/text/ids[\(i)] = \(ids[i]) is not a token id of the \(vocab.count)-entry vocabulary")
        }
        return TokenText(ids: ids, vocab: vocab, documents: docs)
    }

    private static func fromSidecar(_ reader: ActivationsReader) throws -> TokenText? {
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
        return TokenText(ids: Array(tokens.indices), vocab: tokens, documents: docs)
    }

    /// Row `b` in the context of its own document: up to 6 rows before and 3
    /// after, the row itself in bold, WordPiece continuations joined.
    func context(_ b: Int) -> String {
        let ctx = (max(0, b - 6)...min(count - 1, b + 3)).filter { documents[$0] == documents[b] }
        return ctx.map { $0 == b ? "**" + token($0) + "**" : token($0) }.joined(separator: " ")
            .replacingOccurrences(of: " ##", with: "").replacingOccurrences(of: "|", with: "\\|")
    }
}
