import CHDF5
import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

// MARK: Running the executables

struct Outcome: CustomStringConvertible {
    var status: Int32
    /// Killed by a signal (the status is then the signal number).
    var signalled: Bool
    var timedOut: Bool
    var stdout: String
    var stderr: String
    var lines: [Substring] { stderr.split(separator: "\n") }
    var description: String {
        (signalled ? "signal \(status)" : timedOut ? "timed out" : "exit \(status)") + ", stderr: \(stderr.prefix(400))"
    }
}

/// Runs a command with a time limit (a hang is a failure, not a stuck test):
/// past `timeout` seconds the process is killed and `timedOut` set.
func run(_ binary: String, _ args: [String], timeout: Double = 60, environment: [String: String]? = nil) throws -> Outcome {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    if let environment { p.environment = environment }
    let outURL = URL(fileURLWithPath: NSTemporaryDirectory() + "fuzz-out-\(UUID().uuidString)")
    let errURL = URL(fileURLWithPath: NSTemporaryDirectory() + "fuzz-err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
    let out = try FileHandle(forWritingTo: outURL), err = try FileHandle(forWritingTo: errURL)
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    var timedOut = false
    while p.isRunning {
        if Date() > deadline { timedOut = true; kill(p.processIdentifier, SIGKILL); break }
        usleep(5_000)
    }
    p.waitUntilExit()
    try out.close(); try err.close()
    let o = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
    let e = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return Outcome(status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal && !timedOut,
                   timedOut: timedOut, stdout: o, stderr: e)
}

let jsaeBin = builtExecutable("jsae")
let benchBin = builtExecutable("jsae-bench")

func jsae(_ args: [String], timeout: Double = 60) throws -> Outcome { try run(jsaeBin, args, timeout: timeout) }

// MARK: What every outcome must be

/// A clear refusal: exit status 2, exactly one line on stderr, naming
/// `names` (a file or a flag: any one of them) and containing `mentions`.
/// With `afterProgress`, progress lines (training's log) may come first; the
/// error is still exactly one line, the last.
func expectRefusal(_ o: Outcome, naming names: [String], mentions: String? = nil, _ what: String, afterProgress: Bool = false,
                   sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(!o.signalled && !o.timedOut, "\(what): \(o)", sourceLocation: sourceLocation)
    #expect(o.status == 2, "\(what): \(o)", sourceLocation: sourceLocation)
    if afterProgress {
        let errors = o.lines.filter { $0.contains(": error: ") }
        #expect(errors.count == 1 && o.lines.last?.contains(": error: ") == true, "\(what): not one error line, last: \(o)", sourceLocation: sourceLocation)
    } else {
        #expect(o.lines.count == 1, "\(what): not one line: \(o)", sourceLocation: sourceLocation)
    }
    #expect(names.contains { o.stderr.contains($0) }, "\(what): names none of \(names): \(o)", sourceLocation: sourceLocation)
    if let mentions { #expect(o.stderr.contains(mentions), "\(what): no '\(mentions)' in: \(o)", sourceLocation: sourceLocation) }
    #expect(!o.stderr.contains(".tmp-"), "\(what): a temporary name in the error: \(o)", sourceLocation: sourceLocation)
}

func expectSuccess(_ o: Outcome, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(o.status == 0 && !o.signalled && !o.timedOut, "\(what): \(o)", sourceLocation: sourceLocation)
}

// MARK: Files unchanged

/// Every regular file under `dir` (recursively) with its bytes' hash.
func snapshot(_ dir: String) -> [String: UInt64] {
    var out: [String: UInt64] = [:]
    guard let e = FileManager.default.enumerator(atPath: dir) else { return out }
    for case let rel as String in e {
        let p = dir + "/" + rel
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue,
              let data = FileManager.default.contents(atPath: p) else { continue }
        out[rel] = fnv(data)
    }
    return out
}

func fnv(_ data: Data) -> UInt64 {
    var h: UInt64 = 0xcbf29ce484222325
    for b in data { h = (h ^ UInt64(b)) &* 0x100000001b3 }
    return h
}

/// Files that existed before and differ (or vanished) after, except `allowed`.
func changedFiles(_ before: [String: UInt64], _ after: [String: UInt64], allowed: Set<String> = []) -> [String] {
    before.keys.filter { !allowed.contains($0) && after[$0] != before[$0] }.sorted()
}

// MARK: Fixtures

/// A small pair and activations of `tokens` rows that carry the MLP, as
/// `jsae train` needs them.
func pairFixture(_ dir: String, tokens: Int = 64, seed: UInt64 = 7) throws -> (model: String, acts: String, modelValue: JSAEModel<Double>) {
    let shape = PairShape(d: 6, dMlp: 10, mIn: 16, mOut: 12, k: 3, tokens: tokens)
    let (model, x) = randomModel(shape, seed: seed)
    let m = dir + "/model.h5", a = dir + "/acts.h5"
    try ModelFile.write(model, to: m)
    try writeActivations(x, to: a, mlp: model.mlp)
    return (m, a, model)
}

/// The small training configuration every training case uses.
let tinyTrain = ["--expansion", "2", "--k", "3", "--batch", "16", "--buffer-batches", "1", "--log-every", "0"]

/// A 4-step run into `run` with checkpoints at steps 2 and 4, then the
/// step-4 checkpoint and model.h5 removed: a run to resume from step 2, as
/// if it had been killed after its second step.
func runStoppedAtStep2(_ run: String, acts: String, extra: [String] = []) throws {
    let t = try jsae(["train", "--activations", acts, "--out", run, "--steps", "4", "--checkpoint-every", "2"] + extra + tinyTrain)
    expectSuccess(t, "4-step run into \(run)")
    try FileManager.default.removeItem(atPath: run + "/checkpoint-000000004.h5")
    try FileManager.default.removeItem(atPath: run + "/model.h5")
}

/// Rewrites one root attribute of an existing file in place.
func setAttribute(_ path: String, _ name: String, _ value: AttributeValue) throws {
    let f = try HDF5File.openForUpdate(path)
    try f.setAttribute(name, value)
    try f.finish()
}

func deleteAttribute(_ path: String, _ name: String) throws {
    let fid = H5Fopen(path, jsae_h5f_acc_rdwr(), jsae_h5p_default())
    #expect(fid >= 0)
    #expect(H5Adelete_by_name(fid, "/", name, jsae_h5p_default()) >= 0)
    #expect(H5Fclose(fid) >= 0)
}

/// An activations file whose /x declares `shape` with chunked storage of
/// which nothing (or only the first chunk) is written: a tiny file that
/// claims terabytes.
func hugeDeclaredActivations(_ path: String, shape: [UInt64], chunk: [UInt64], writeFirstChunk: Bool) throws {
    try chunkedActivations(path, shape: shape, chunk: chunk, written: writeFirstChunk ? [chunk] : [])
}

/// Replaces `dataset` in an existing file by a chunked float32 dataset that
/// declares `shape` and holds no chunk: a file that claims a tensor it does
/// not store.
func replaceWithDeclaredOnly(_ path: String, _ dataset: String, shape: [UInt64], chunk: [UInt64]) throws {
    let fid = H5Fopen(path, jsae_h5f_acc_rdwr(), jsae_h5p_default())
    #expect(fid >= 0)
    #expect(H5Ldelete(fid, dataset, jsae_h5p_default()) >= 0)
    var dims = shape
    let sid = H5Screate_simple(Int32(dims.count), &dims, nil)
    let dcpl = H5Pcreate(jsae_h5p_dataset_create())
    var c = chunk
    H5Pset_chunk(dcpl, Int32(c.count), &c)
    let did = H5Dcreate2(fid, dataset, jsae_h5t_ieee_f32le(), sid, jsae_h5p_default(), dcpl, jsae_h5p_default())
    #expect(did >= 0)
    H5Dclose(did); H5Pclose(dcpl); H5Sclose(sid)
    #expect(H5Fclose(fid) >= 0)
}

/// An activations file whose /x is chunked (as h5py and the exporter write
/// it) with the given hyperslabs, each starting at the origin-aligned chunk
/// grid's next free block, written with x[r, c] = r + c/1000.
func chunkedActivations(_ path: String, shape: [UInt64], chunk: [UInt64], written blocks: [[UInt64]],
                        maxRows unlimited: Bool = false) throws {
    let fid = H5Fcreate(path, jsae_h5f_acc_trunc(), jsae_h5p_default(), jsae_h5p_default())
    #expect(fid >= 0)
    var dims = shape
    var maxDims = shape
    if unlimited { maxDims[0] = UInt64.max }   // H5S_UNLIMITED, as h5py's maxshape=(None, d)
    let sid = H5Screate_simple(Int32(dims.count), &dims, &maxDims)
    let dcpl = H5Pcreate(jsae_h5p_dataset_create())
    var c = chunk
    H5Pset_chunk(dcpl, Int32(c.count), &c)
    let did = H5Dcreate2(fid, "/x", jsae_h5t_ieee_f32le(), sid, jsae_h5p_default(), dcpl, jsae_h5p_default())
    #expect(did >= 0)
    var row: UInt64 = 0
    for block in blocks {
        let cols = Int(block.count > 1 ? block[1] : 1)
        let values = (0..<Int(block.reduce(1, *))).map { Float(Int(row) + $0 / cols) + Float($0 % cols) / 1000 }
        let fspace = H5Dget_space(did)
        var start = [UInt64](repeating: 0, count: block.count)
        start[0] = row
        var count = block
        #expect(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, nil, &count, nil) >= 0)
        let mspace = H5Screate_simple(Int32(count.count), &count, nil)
        let status = values.withUnsafeBytes { H5Dwrite(did, jsae_h5t_native_float(), mspace, fspace, jsae_h5p_default(), $0.baseAddress) }
        #expect(status >= 0)
        H5Sclose(mspace); H5Sclose(fspace)
        row += block[0]
    }
    H5Dclose(did); H5Pclose(dcpl); H5Sclose(sid)
    #expect(H5Fclose(fid) >= 0)
    try setAttribute(path, "format_version", .int(1))
    try setAttribute(path, "kind", .string("activations"))
}

/// A file whose group /g holds a hard link back to itself (/g/self -> /g)
/// and to the root (/g/up -> /).
func cyclicFile(_ path: String) throws {
    let fid = H5Fcreate(path, jsae_h5f_acc_trunc(), jsae_h5p_default(), jsae_h5p_default())
    let gid = H5Gcreate2(fid, "/g", jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
    #expect(H5Lcreate_hard(fid, "/g", fid, "/g/self", jsae_h5p_default(), jsae_h5p_default()) >= 0)
    #expect(H5Lcreate_hard(fid, "/", fid, "/g/up", jsae_h5p_default(), jsae_h5p_default()) >= 0)
    H5Gclose(gid)
    #expect(H5Fclose(fid) >= 0)
    let f = try HDF5File.openForUpdate(path)
    try f.write("/g/data", shape: [2], [1.0, 2.0])
    try f.finish()
}

/// A copy of `src` with byte `offset` XORed with `mask` (never 0).
func flipped(_ src: String, to dst: String, offset: Int, mask: UInt8) throws {
    var data = try Data(contentsOf: URL(fileURLWithPath: src))
    data[offset] ^= mask
    try data.write(to: URL(fileURLWithPath: dst))
}

/// SplitMix64, for the fuzz cases' choices (the library's generator is
/// deliberately not used to draw the test's own inputs).
struct FuzzRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e3779b97f4a7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58476d1ce4e5b9
        z = (z ^ (z >> 27)) &* 0x94d049bb133111eb
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// The maximum absolute difference between two equally long arrays.
func maxDiff(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
