import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// The built `jsae` executable: it sits beside the test bundle in the build
/// products folder (the test target depends on it, so `swift test` builds it).
let jsaeBinary: String = builtExecutable("jsae")

struct Run { var status: Int32; var stdout: String; var stderr: String }

func jsae(_ args: [String], binary: String = jsaeBinary, environment: [String: String]? = nil) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    if let environment { p.environment = environment }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// Writes a model and matching activations for a small random pair.
func fixture(_ dir: String, seed: UInt64 = 1, mutateX: ((inout Matrix<Double>) -> Void)? = nil) throws -> (model: String, acts: String) {
    let (model, x0) = randomModel(PairShape.sweep[0], seed: seed)
    var x = x0
    mutateX?(&x)
    let modelPath = dir + "/model.h5", actsPath = dir + "/acts.h5"
    try ModelFile.write(model, to: modelPath)
    try writeActivations(x, to: actsPath)
    return (modelPath, actsPath)
}


/// Every bad input: exit status 2, one line on stderr naming the file (nil
/// for a configuration error, which has none) and the problem, and (with
/// `outDir`) no output file nor temporary left behind.
func expectBadInput(_ args: [String], file: String?, mentions: String, outDir: String? = nil,
                    sourceLocation: SourceLocation = #_sourceLocation) throws {
    let r = try jsae(args)
    #expect(r.status == 2, "status \(r.status): \(r.stderr)", sourceLocation: sourceLocation)
    let lines = r.stderr.split(separator: "\n")
    #expect(lines.count == 1, "stderr: \(r.stderr)", sourceLocation: sourceLocation)
    if let file { #expect(r.stderr.contains(file), "no file name in: \(r.stderr)", sourceLocation: sourceLocation) }
    #expect(r.stderr.contains(mentions), "expected '\(mentions)' in: \(r.stderr)", sourceLocation: sourceLocation)
    guard let outDir else { return }
    #expect(!FileManager.default.fileExists(atPath: outDir + "/out.h5"), sourceLocation: sourceLocation)
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: outDir).filter { $0.contains(".tmp-") }
    #expect(leftovers.isEmpty, "temporaries left: \(leftovers)", sourceLocation: sourceLocation)
}

@Suite("jsae CLI")
struct CLITests {
    @Test("forward writes a forward file with the documented layout")
    func forwardHappyPath() throws {
        let dir = temporaryDirectory()
        let (m, a) = try fixture(dir)
        let out = dir + "/f.h5"
        let r = try jsae(["forward", "--model", m, "--activations", a, "--out", out, "--lambda", "0.5", "--chunk-tokens", "4"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("wrote \(out)"))
        let f = try HDF5File.open(out)
        #expect(try f.intAttribute("format_version") == 1)
        #expect(try f.stringAttribute("kind") == "forward")
        #expect(try f.stringAttribute("evaluation_point") == "trueInput")
        #expect(try f.doubleAttribute("lambda") == 0.5)
        let s = PairShape.sweep[0]
        let want: [(String, [Int])] = [
            ("/sae_in/indices", [s.tokens, s.k]), ("/sae_in/values", [s.tokens, s.k]), ("/x_hat", [s.tokens, s.d]),
            ("/sae_out/indices", [s.tokens, s.k]), ("/sae_out/values", [s.tokens, s.k]), ("/y", [s.tokens, s.d]),
            ("/y_hat", [s.tokens, s.d]), ("/jacobian", [s.tokens, s.k, s.k]),
        ]
        for (name, shape) in want { #expect(try f.info(name).shape == shape, "\(name)") }
        #expect(try f.info("/sae_in/indices").element == .integer(bytes: 8))
        #expect(try f.info("/jacobian").element == .float(bytes: 4))
        for key in ["mse_in", "mse_out", "jacobian_l1", "loss"] { #expect(try f.doubleAttribute(key) != nil, "\(key)") }
        // Only the output file is left: no temporary beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["acts.h5", "f.h5", "model.h5"])
    }

    @Test("forward in double on a golden case reproduces the golden loss")
    func forwardGolden() throws {
        let dir = temporaryDirectory()
        let g = packageRoot + "/golden/basic"
        let out = dir + "/f.h5"
        let r = try jsae(["forward", "--model", g + "/model.h5", "--activations", g + "/activations.h5", "--out", out,
                          "--precision", "double", "--lambda", "0.7", "--evaluation-point", "reconstruction"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try ForwardFile<Double>(out), want = try ForwardFile<Double>(g + "/forward.reconstruction.h5")
        // Double vs PyTorch float64: rounding only.
        #expect(allClose([got.loss], [want.loss], rtol: 1e-12, atol: 0))
        #expect(got.jacobian.map { allClose($0, want.jacobian!, rtol: 1e-10, atol: 1e-12) } == true)
    }

    @Test("inspect prints kind, attributes, shapes and dtypes")
    func inspect() throws {
        let r = try jsae(["inspect", packageRoot + "/golden/basic/model.h5"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("kind model"))
        #expect(r.stdout.contains("@k = 3"))
        #expect(r.stdout.contains("/sae_in/W_enc  [6, 16]  float64"))
        #expect(r.stdout.contains("/mlp/W_out  [10, 6]  float64"))
    }

    func forwardArgs(_ m: String, _ a: String, _ dir: String) -> [String] {
        ["forward", "--model", m, "--activations", a, "--out", dir + "/out.h5"]
    }

    @Test("missing model or activations file")
    func missingFiles() throws {
        let dir = temporaryDirectory()
        let (m, a) = try fixture(dir)
        try expectBadInput(forwardArgs(dir + "/nope.h5", a, dir), file: dir + "/nope.h5", mentions: "no such file", outDir: dir)
        try expectBadInput(forwardArgs(m, dir + "/gone.h5", dir), file: dir + "/gone.h5", mentions: "no such file", outDir: dir)
    }

    @Test("empty and non-HDF5 files")
    func emptyFile() throws {
        let dir = temporaryDirectory()
        let (m, _) = try fixture(dir)
        let empty = dir + "/empty.h5", text = dir + "/text.h5"
        FileManager.default.createFile(atPath: empty, contents: Data())
        FileManager.default.createFile(atPath: text, contents: Data("not hdf5\n".utf8))
        try expectBadInput(forwardArgs(m, empty, dir), file: empty, mentions: "is empty", outDir: dir)
        try expectBadInput(forwardArgs(m, text, dir), file: text, mentions: "not an HDF5 file", outDir: dir)
    }

    @Test("a truncated model file is reported, not loaded")
    func truncated() throws {
        let dir = temporaryDirectory()
        let (m, a) = try fixture(dir)
        let data = try Data(contentsOf: URL(fileURLWithPath: m))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: m))
        let r = try jsae(forwardArgs(m, a, dir))
        #expect(r.status == 2 && r.stderr.contains(m) && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test("missing dataset in the model")
    func missingDataset() throws {
        let dir = temporaryDirectory()
        let (_, a) = try fixture(dir)
        let (model, _) = randomModel(PairShape.sweep[0], seed: 1)
        let m = dir + "/partial.h5"
        let f = try HDF5File.create(m)
        try FileFormat.writeHeader(f, kind: .model)
        try f.setAttribute("k", .int(3))
        try f.write("/sae_in/W_enc", model.saeIn.wEnc)
        try f.write("/sae_in/b_enc", shape: [model.saeIn.m], model.saeIn.bEnc)
        try f.write("/sae_in/b_dec", shape: [model.saeIn.d], model.saeIn.bDec)
        f.close()
        try expectBadInput(forwardArgs(m, a, dir), file: m, mentions: "missing dataset /sae_in/W_dec", outDir: dir)
    }

    @Test("activations whose width does not match the model")
    func shapeMismatch() throws {
        let dir = temporaryDirectory()
        let (m, _) = try fixture(dir)
        let a = dir + "/wide.h5"
        try writeActivations(Matrix(rows: 4, cols: PairShape.sweep[0].d + 1, repeating: 0.5), to: a)
        try expectBadInput(forwardArgs(m, a, dir), file: a, mentions: "d = 7 columns but the model", outDir: dir)
    }

    @Test("NaN and Inf in activations", arguments: [Double.nan, .infinity, -.infinity])
    func nonFinite(_ bad: Double) throws {
        let dir = temporaryDirectory()
        let (m, a) = try fixture(dir) { $0[5, 2] = bad }
        try expectBadInput(forwardArgs(m, a, dir), file: a, mentions: "\(bad.isNaN ? "NaN" : "Inf") at row 5, column 2", outDir: dir)
    }

    @Test("k larger than m")
    func kTooLarge() throws {
        let dir = temporaryDirectory()
        let (m, a) = try fixture(dir)
        // Rewrite k in place: m_in = 16.
        let f = try HDF5File.openForUpdate(m)
        try f.setAttribute("k", .int(17))
        f.close()
        try expectBadInput(forwardArgs(m, a, dir), file: m, mentions: "k = 17 exceeds the number of latents m = 16", outDir: dir)
    }

    @Test("wrong dtype and wrong kind")
    func wrongDtypeAndKind() throws {
        let dir = temporaryDirectory()
        let (m, _) = try fixture(dir)
        let a = dir + "/ints.h5"
        let f = try HDF5File.create(a)
        try FileFormat.writeHeader(f, kind: .activations)
        try f.writeInts("/x", shape: [3, 6], [Int](repeating: 1, count: 18))
        f.close()
        try expectBadInput(forwardArgs(m, a, dir), file: a, mentions: "/x has dtype int64", outDir: dir)
        // A model file given as activations.
        try expectBadInput(forwardArgs(m, m, dir), file: m, mentions: "kind is \"model\", expected \"activations\"", outDir: dir)
    }
}

/// Runs jsae with `args`, reading its stderr until `ready` holds for all of
/// it read so far (or the stream ends), then sends `signal`; returns the
/// ended process (its terminationStatus or signal) and its whole stderr.
func signalJSAE(_ args: [String], _ signal: Int32, binary: String = jsaeBinary, when ready: (String) -> Bool) throws -> (process: Process, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = args
    let err = Pipe()
    p.standardError = err
    p.standardOutput = Pipe()
    try p.run()
    var seen = ""
    while !ready(seen) {
        let chunk = err.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        seen += String(decoding: chunk, as: UTF8.self)
    }
    kill(p.processIdentifier, signal)
    seen += String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p, seen)
}
