import Foundation
import Testing
import JSAECore
import JSAEIO
import _JSAETestSupport

/// golden/interop (written by golden/interop.py, independent numpy float64).
private let interop = packageRoot + "/golden/interop"

/// The `jsae import` arguments of each golden pair (golden/README.md).
private func importArgs(_ pair: String) -> [String] {
    let g = interop
    switch pair {
    case "authors": return ["import", g + "/authors"]
    case "saelens": return ["import", "--sae-in", g + "/saelens_in", "--sae-out", g + "/saelens_out", "--mlp", g + "/activations.h5"]
    case "sparsify": return ["import", "--sae-in", g + "/sparsify_in", "--sae-out", g + "/sparsify_out", "--mlp", g + "/activations.h5"]
    default: return ["import", "--sae-in", g + "/saelens_pre6", "--sae-out", g + "/saelens_out", "--mlp", g + "/activations.h5"]
    }
}

/// A copy of a golden folder that a test may damage.
private func copyOf(_ name: String) throws -> String {
    let dst = temporaryDirectory("jsae-interop") + "/" + name
    try FileManager.default.copyItem(atPath: interop + "/" + name, toPath: dst)
    return dst
}

private func editConfig(_ folder: String, _ edit: (inout [String: Any]) -> Void) throws {
    let path = folder + "/cfg.json"
    var o = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    edit(&o)
    try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: path))
}

private func editWeights(_ path: String, _ edit: (inout SafetensorsFile) -> Void) throws {
    var f = try SafetensorsFile.read(path)
    edit(&f)
    try f.write(to: path)
}

/// Every tensor of two models, bit for bit (NaN-free by construction).
private func expectSameModel(_ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let x: JSAEModel<Double> = try ModelFile.read(a), y: JSAEModel<Double> = try ModelFile.read(b)
    for (s, t) in [(x.saeIn, y.saeIn), (try #require(x.saeOut), try #require(y.saeOut))] {
        for name in SAETensors<Double>.Name.allCases {
            #expect(s.tensors[name].map(\.bitPattern) == t.tensors[name].map(\.bitPattern), "\(name.rawValue)", sourceLocation: sourceLocation)
        }
        #expect(s.k == t.k, sourceLocation: sourceLocation)
    }
    #expect(x.mlp == y.mlp, "MLP", sourceLocation: sourceLocation)
}

@Suite("jsae import and export")
struct InteropCLITests {
    @Test("each golden pair imports, and forward gives the golden float64 Jacobian", arguments: ["authors", "saelens", "sparsify", "mixed"])
    func importMatchesGolden(_ pair: String) throws {
        let dir = temporaryDirectory("jsae-interop")
        let model = dir + "/model.h5"
        let r = try jsae(importArgs(pair) + ["--out", model])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("wrote \(model)"))
        let f = try HDF5File.open(model)
        #expect(try f.stringAttribute("kind") == "model")
        #expect(try f.stringAttribute("activation") == "gelu")
        #expect(try f.stringAttribute("import_format") != nil)
        if pair == "authors" {
            #expect(try f.stringAttribute("import_source_config") == String(contentsOfFile: interop + "/authors/cfg.json", encoding: .utf8))
            #expect(try f.intAttribute("layer") == 3)
            #expect(try f.stringAttribute("hook_out") == "blocks.3.hook_mlp_out")
        } else {
            #expect(try f.stringAttribute("import_source_config_in")?.contains("\"d_in\"") == true)
            #expect(try f.stringAttribute("import_source_config_out")?.contains("\"k\"") == true)
        }
        f.close()
        let e = try HDF5File.open(interop + "/expected.h5")
        let version = try e.intAttribute("interop_version")
        try #require(version == 1, "golden/interop/expected.h5 has interop_version \(version.map(String.init) ?? "none"), expected 1: rerun golden/interop.py")
        let want: [Double] = try e.readFloats("/\(pair)/jacobian").data
        let wantIn = try e.readInts("/\(pair)/in_indices").data, wantOut = try e.readInts("/\(pair)/out_indices").data
        // The float32 pipeline (the default) against float64 numpy: J is a sum
        // over d_mlp = 12 of products of O(1) float32 values (|J| ≤ 0.7 here),
        // so float32 rounding (~6e-8 relative per operation) leaves errors
        // of a few 1e-7; 1e-5 absolute is ~30× that and still far below any
        // real difference (a wrong fold moves J by O(0.1)). In double only the
        // summation order differs (1e-12). Index sets must match exactly:
        // the golden tokens keep every top-k gap above 0.01.
        for (precision, atol) in [("float", 1e-5), ("double", 1e-12)] {
            let out = dir + "/f.\(precision).h5"
            let fr = try jsae(["forward", "--model", model, "--activations", interop + "/activations.h5", "--out", out, "--precision", precision])
            #expect(fr.status == 0, "\(fr.stderr)")
            let got = try ForwardFile<Double>(out)
            #expect(got.inIndices == wantIn, "\(precision)")
            #expect(got.outIndices == wantOut, "\(precision)")
            let j = try #require(got.jacobian)
            try #require(j.count == want.count, "\(j.count) Jacobian entries, golden has \(want.count)")
            let c = closeness(j, want, rtol: 0, atol: atol)
            #expect(c.ratio <= 1, "\(pair) \(precision): J differs from the golden by \(c) ")
        }
    }

    @Test("export then import gives back the same model bit for bit, in both formats", arguments: ["authors", "saelens"])
    func roundTrip(_ pair: String) throws {
        let dir = temporaryDirectory("jsae-interop")
        let a = dir + "/a.h5"
        #expect(try jsae(importArgs(pair) + ["--out", a]).status == 0)

        let lens = dir + "/lens"
        var r = try jsae(["export", a, "--format", "saelens", "--out", lens])
        #expect(r.status == 0, "\(r.stderr)")
        let cfg = try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: lens + "/sae_out/cfg.json"))) as? [String: Any])
        #expect(cfg["architecture"] as? String == "topk" && cfg["k"] as? Int == 4 && cfg["d_sae"] as? Int == 16)
        // authors: no fold, every value a float; saelens: a folded b_enc, which only float64 holds.
        #expect(cfg["dtype"] as? String == (pair == "authors" ? "float32" : "float64"))
        let meta = try #require(cfg["metadata"] as? [String: Any])
        #expect(meta["hook_name"] as? String == "blocks.3.hook_mlp_out" && meta["model_name"] as? String == "pythia-70m-deduped")
        #expect(try SafetensorsFile.read(lens + "/sae_in/sae_weights.safetensors").tensors.keys.sorted() == ["W_dec", "W_enc", "b_dec", "b_enc"])
        let b = dir + "/b.h5"
        r = try jsae(["import", "--sae-in", lens + "/sae_in", "--sae-out", lens + "/sae_out", "--mlp", a, "--out", b])
        #expect(r.status == 0, "\(r.stderr)")
        try expectSameModel(a, b)

        let pairDir = dir + "/pair"
        r = try jsae(["export", a, "--format", "jsae-pair", "--out", pairDir])
        #expect(r.status == 0, "\(r.stderr)")
        let names = try SafetensorsFile.read(pairDir + "/sae_weights.safetensors").tensors.keys.sorted()
        #expect(names == ["_W_dec", "_W_dec_out", "_W_enc", "_W_enc_out", "_b_dec", "_b_dec_out", "_b_enc", "_b_enc_out",
                          "mlp.W_in", "mlp.W_out", "mlp.b_in", "mlp.b_out"])
        let c = dir + "/c.h5"
        r = try jsae(["import", pairDir, "--out", c])
        #expect(r.status == 0, "\(r.stderr)")
        try expectSameModel(a, c)
        // Nothing but the outputs: no temporaries beside them.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["a.h5", "b.h5", "c.h5", "lens", "pair"])
    }

    @Test("export's hook names: TransformerLens' from source_model and layer, else the activations file's, else unknown")
    func exportHooks() throws {
        let dir = temporaryDirectory("jsae-interop")
        let a = dir + "/a.h5"
        #expect(try jsae(importArgs("authors") + ["--out", a]).status == 0)
        let model: JSAEModel<Double> = try ModelFile.read(a)
        func hooks(_ attributes: [String: AttributeValue], _ tag: String) throws -> [String?] {
            let m = dir + "/\(tag).h5"
            try ModelFile.write(model, to: m, attributes: attributes)
            let r = try jsae(["export", m, "--format", "saelens", "--out", dir + "/\(tag)"])
            #expect(r.status == 0, "\(r.stderr)")
            return try ["sae_in", "sae_out"].map { side in
                let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/\(tag)/\(side)/cfg.json"))) as? [String: Any]
                return (cfg?["metadata"] as? [String: Any])?["hook_name"] as? String
            }
        }
        #expect(try hooks(["source_model": .string("gpt2"), "layer": .int(7)], "tl") == ["blocks.7.ln2.hook_normalized", "blocks.7.hook_mlp_out"])
        // A path is not a TransformerLens name: the hooks the activations file recorded.
        let acts = interop + "/activations.h5"
        #expect(try hooks(["source_model": .string("gpt-neox: /models/x"), "layer": .int(7), "activations_file": .string(acts)], "acts")
                == ["blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out"])
        #expect(try hooks([:], "none") == ["unknown", "unknown"])
    }

    @Test("export refuses an existing folder and a model it cannot express, leaving nothing")
    func exportRefuses() throws {
        let dir = temporaryDirectory("jsae-interop")
        let a = dir + "/a.h5"
        #expect(try jsae(importArgs("authors") + ["--out", a]).status == 0)
        try FileManager.default.createDirectory(atPath: dir + "/taken", withIntermediateDirectories: false)
        try expectBadInput(["export", a, "--format", "saelens", "--out", dir + "/taken"], file: dir + "/taken", mentions: "already exists")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/taken").isEmpty)
        try expectBadInput(["export", a, "--format", "saelens", "--out", dir + "/no/such/x"], file: dir + "/no/such/x", mentions: "does not exist")
        try expectBadInput(["export", dir + "/missing.h5", "--format", "jsae-pair", "--out", dir + "/p"], file: dir + "/missing.h5", mentions: "no such file")
        // golden/basic has m_in 16 and m_out 12: the authors' format has one d_sae.
        let basic = packageRoot + "/golden/basic/model.h5"
        try expectBadInput(["export", basic, "--format", "jsae-pair", "--out", dir + "/p"], file: basic, mentions: "one d_sae")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["a.h5", "taken"])
    }

    @Test("bad folders of every format: one line naming the file, exit 2, no output")
    func badFolders() throws {
        let outDir = temporaryDirectory("jsae-interop")
        let out = outDir + "/out.h5"
        let acts = interop + "/activations.h5"
        func pairArgs(_ i: String, _ o: String, mlp: String = acts) -> [String] { ["import", "--sae-in", i, "--sae-out", o, "--mlp", mlp, "--out", out] }
        let lensOut = interop + "/saelens_out"

        // A corrupted byte in each format's safetensors header (0xFF is never UTF-8).
        for (folder, file) in [("authors", "sae_weights.safetensors"), ("saelens_in", "sae_weights.safetensors"), ("sparsify_in", "sae.safetensors")] {
            let f = try copyOf(folder)
            let path = f + "/" + file
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[20] = 0xFF
            try bytes.write(to: URL(fileURLWithPath: path))
            let args = folder == "authors" ? ["import", f, "--out", out] : pairArgs(f, lensOut)
            try expectBadInput(args, file: path, mentions: "UTF-8", outDir: outDir)
        }

        // A missing tensor.
        var f = try copyOf("authors")
        try editWeights(f + "/sae_weights.safetensors") { $0.tensors["_W_dec_out"] = nil }
        try expectBadInput(["import", f, "--out", out], file: f + "/sae_weights.safetensors", mentions: "no tensor \"_W_dec_out\"", outDir: outDir)
        f = try copyOf("saelens_in")
        try editWeights(f + "/sae_weights.safetensors") { $0.tensors["b_enc"] = nil }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/sae_weights.safetensors", mentions: "no tensor \"b_enc\"", outDir: outDir)
        f = try copyOf("sparsify_in")
        try editWeights(f + "/sae.safetensors") { $0.tensors["encoder.bias"] = nil }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/sae.safetensors", mentions: "no tensor \"encoder.bias\"", outDir: outDir)

        // A wrong shape.
        f = try copyOf("authors")
        try editWeights(f + "/sae_weights.safetensors") { $0.tensors["mlp.W_out"] = SafetensorsTensor(dtype: .f32, shape: [12, 7], values: [Double](repeating: 0, count: 84)) }
        try expectBadInput(["import", f, "--out", out], file: f + "/sae_weights.safetensors", mentions: "mlp.W_out", outDir: outDir)
        f = try copyOf("saelens_in")
        try editWeights(f + "/sae_weights.safetensors") { $0.tensors["W_enc"] = SafetensorsTensor(dtype: .f32, shape: [8, 15], values: [Double](repeating: 0, count: 120)) }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/sae_weights.safetensors", mentions: "expected [8, 16]", outDir: outDir)
        f = try copyOf("sparsify_in")
        try editWeights(f + "/sae.safetensors") { $0.tensors["encoder.weight"]!.shape = [8, 16] }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/sae.safetensors", mentions: "expected [16, 8]", outDir: outDir)

        // A latent scaling factor other than ones.
        f = try copyOf("saelens_in")
        try editWeights(f + "/sae_weights.safetensors") { $0.tensors["scaling_factor"] = SafetensorsTensor(dtype: .f32, shape: [16], values: [Double](repeating: 2, count: 16)) }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/sae_weights.safetensors", mentions: "scaling_factor", outDir: outDir)

        // Not a TopK SAE.
        f = try copyOf("authors")
        try editConfig(f) { $0["architecture"] = "jumprelu" }
        try expectBadInput(["import", f, "--out", out], file: f + "/cfg.json", mentions: "jumprelu", outDir: outDir)
        f = try copyOf("saelens_in")
        try editConfig(f) { $0["architecture"] = "jumprelu" }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/cfg.json", mentions: "jumprelu", outDir: outDir)
        f = try copyOf("saelens_pre6")
        try editConfig(f) { $0["activation_fn"] = "relu" }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/cfg.json", mentions: "relu", outDir: outDir)
        f = try copyOf("sparsify_in")
        try editConfig(f) { $0["activation"] = "groupmax" }
        try expectBadInput(pairArgs(f, lensOut), file: f + "/cfg.json", mentions: "groupmax", outDir: outDir)

        // Inputs the SAE expects rescaled.
        for folder in ["authors", "saelens_in", "saelens_pre6"] {
            f = try copyOf(folder)
            try editConfig(f) { $0["normalize_activations"] = "expected_average_only_in" }
            try expectBadInput(folder == "authors" ? ["import", f, "--out", out] : pairArgs(f, lensOut), file: f + "/cfg.json",
                               mentions: "expected_average_only_in", outDir: outDir)
        }

        // The two SAEs and the MLP disagree.
        f = try copyOf("saelens_out")
        try editConfig(f) { $0["k"] = 3 }
        try expectBadInput(pairArgs(interop + "/saelens_in", f), file: f + "/cfg.json", mentions: "k = 3", outDir: outDir)
        let d6 = packageRoot + "/golden/basic/model.h5"
        try expectBadInput(pairArgs(interop + "/saelens_in", lensOut, mlp: d6), file: d6, mentions: "d = 6", outDir: outDir)
        try expectBadInput(pairArgs(interop + "/saelens_in", lensOut, mlp: interop + "/expected.h5"), file: interop + "/expected.h5",
                           mentions: "format_version", outDir: outDir)

        // The wrong kind of folder in each place.
        try expectBadInput(["import", interop + "/saelens_in", "--out", out], file: interop + "/saelens_in/cfg.json", mentions: "--sae-in", outDir: outDir)
        try expectBadInput(pairArgs(interop + "/authors", lensOut), file: interop + "/authors/cfg.json", mentions: "authors' pair", outDir: outDir)
        try expectBadInput(pairArgs(interop, lensOut), file: interop + "/cfg.json", mentions: "does not exist", outDir: outDir)
    }
}
