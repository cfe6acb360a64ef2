import Foundation
import JSAECore

/// Writes a model file's pair as folders other code loads (`jsae export`).
public enum ForeignExport {
    public enum Format: String, Sendable, CaseIterable {
        /// DIR/sae_in and DIR/sae_out, each a SAELens 6 TopK folder.
        case saelens
        /// The authors' pair folder (cfg.json, sae_weights.safetensors with the MLP).
        case jsaePair = "jsae-pair"
    }

    /// Where the SAEs were hooked, for the configs' hook names.
    struct Hooks {
        var modelName: String?
        var layer: Int?
        var hookIn = "unknown"
        var hookOut = "unknown"
    }

    /// Exports `modelPath` to the new folder `dir`, built under `dir.tmp-PID`
    /// and renamed into place, so `dir` is either complete or absent.
    /// Returns the files written, relative to `dir`.
    @discardableResult
    public static func export(modelPath: String, format: Format, to dir: String) throws -> [String] {
        let model: JSAEModel<Double> = try ModelFile.read(modelPath)
        let hooks = try readHooks(modelPath)
        var files: [(String, Data?, SafetensorsFile?)] = []
        switch format {
        case .saelens:
            files += try saeLensFolder("sae_in", model.saeIn, hook: hooks.hookIn, hooks)
            if let o = model.saeOut { files += try saeLensFolder("sae_out", o, hook: hooks.hookOut, hooks) }
        case .jsaePair:
            guard let o = model.saeOut else { throw JSAEError(file: modelPath, "has no /sae_out: the authors' pair format needs both SAEs") }
            guard let mlp = model.mlp else { throw JSAEError(file: modelPath, "has no /mlp: the authors' pair format stores the MLP") }
            guard o.m == model.saeIn.m else {
                throw JSAEError(file: modelPath, "/sae_in has m = \(model.saeIn.m) but /sae_out has m = \(o.m): the authors' pair format has one d_sae")
            }
            files += try authorsPair(model.saeIn, o, mlp, hooks)
        }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            throw JSAEError(file: dir, "already exists: export never overwrites, choose another --out")
        }
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        try requireFolder(url.deletingLastPathComponent().path, for: dir)
        let temp = url.path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.removeItem(atPath: temp)
        do {
            try createOutputFolder(temp)
            for (name, data, st) in files {
                let path = temp + "/" + name
                try createOutputFolder(URL(fileURLWithPath: path).deletingLastPathComponent().path)
                if let data { try atomicWrite(data, to: path) }
                if let st { try st.write(to: path) }
            }
            guard !FileManager.default.fileExists(atPath: url.path) else {
                throw JSAEError(file: dir, "appeared while it was being written: export never overwrites")
            }
            guard rename(temp, url.path) == 0 else {
                throw JSAEError(file: dir, "cannot be put in place: \(String(cString: strerror(errno)))")
            }
        } catch let e as JSAEError {
            try? FileManager.default.removeItem(atPath: temp)
            throw JSAEError(file: e.file.map { $0.replacingOccurrences(of: temp, with: url.path) },
                            e.message.replacingOccurrences(of: temp, with: url.path))
        }
        return files.map(\.0)
    }

    /// SAELens 6 loads a TopK SAE from these keys (SAEConfig and
    /// TopKSAEConfig); b_dec is never subtracted here, since the harness's
    /// encoder bias already holds any such shift.
    static func saeLensFolder(_ name: String, _ sae: TopKSAE<Double>, hook: String, _ h: Hooks) throws -> [(String, Data?, SafetensorsFile?)] {
        let dtype = exactlyFloat([sae.tensors[.wEnc], sae.tensors[.bEnc], sae.tensors[.wDec], sae.tensors[.bDec]]) ? SafetensorsDType.f32 : .f64
        let cfg: [String: Any] = [
            "architecture": "topk", "d_in": sae.d, "d_sae": sae.m, "k": sae.k,
            "dtype": dtype == .f32 ? "float32" : "float64", "device": "cpu",
            "apply_b_dec_to_input": false, "normalize_activations": "none", "reshape_activations": "none",
            "rescale_acts_by_decoder_norm": false,
            "metadata": [
                "sae_lens_version": "6.0.0", "model_name": h.modelName ?? "unknown", "hook_name": hook,
                "hook_head_index": NSNull(), "context_size": NSNull(), "prepend_bos": true, "dataset_path": "unknown",
                "model_class_name": "HookedTransformer", "exported_by": "jsae export",
            ] as [String: Any],
        ]
        return [(name + "/cfg.json", try json(cfg), nil),
                (name + "/sae_weights.safetensors", nil, weights(sae, prefix: "", suffix: "", dtype: dtype))]
    }

    /// The authors' SAEPairConfig.to_dict keys (sae_pair.py at b73cadb), so
    /// SAEPair.load_from_pretrained reads the folder, plus
    /// `jsae_mlp_activation`, which their loader ignores and `jsae import`
    /// reads back.
    static func authorsPair(_ a: TopKSAE<Double>, _ b: TopKSAE<Double>, _ mlp: MLP<Double>, _ h: Hooks) throws -> [(String, Data?, SafetensorsFile?)] {
        let all = [a.tensors[.wEnc], a.tensors[.bEnc], a.tensors[.wDec], a.tensors[.bDec],
                   b.tensors[.wEnc], b.tensors[.bEnc], b.tensors[.wDec], b.tensors[.bDec],
                   mlp.wIn.data, mlp.bIn, mlp.wOut.data, mlp.bOut]
        let dtype = exactlyFloat(all) ? SafetensorsDType.f32 : .f64
        let cfg: [String: Any] = [
            "architecture": "standard", "is_pair": true, "use_jacobian_loss": true, "d_in": a.d, "d_sae": a.m,
            "dtype": dtype == .f32 ? "float32" : "float64", "device": "cpu",
            "model_name": h.modelName ?? "unknown", "randomize_llm_weights": false,
            "hook_name": h.hookIn, "hook_layer": h.layer.map { $0 as Any } ?? NSNull(), "hook_head_index": NSNull(),
            "activation_fn_str": "topk", "activation_fn_kwargs": ["k": a.k] as [String: Any],
            "apply_b_dec_to_input": false, "finetuning_scaling_factor": false, "prepend_bos": true,
            "dataset_path": "unknown", "dataset_trust_remote_code": false, "context_size": NSNull(),
            "normalize_activations": "none", "neuronpedia_id": NSNull(), "model_from_pretrained_kwargs": [String: Any](),
            "seqpos_slice": [NSNull()], "sparsity_metric": "l1", "jsae_mlp_activation": mlp.activation.rawValue,
        ]
        var st = weights(a, prefix: "_", suffix: "", dtype: dtype)
        st.tensors.merge(weights(b, prefix: "_", suffix: "_out", dtype: dtype).tensors) { x, _ in x }
        st.tensors["mlp.W_in"] = SafetensorsTensor(dtype: dtype, shape: [mlp.d, mlp.dMlp], values: mlp.wIn.data)
        st.tensors["mlp.b_in"] = SafetensorsTensor(dtype: dtype, shape: [mlp.dMlp], values: mlp.bIn)
        st.tensors["mlp.W_out"] = SafetensorsTensor(dtype: dtype, shape: [mlp.dMlp, mlp.d], values: mlp.wOut.data)
        st.tensors["mlp.b_out"] = SafetensorsTensor(dtype: dtype, shape: [mlp.d], values: mlp.bOut)
        return [("cfg.json", try json(cfg), nil), ("sae_weights.safetensors", nil, st)]
    }

    static func weights(_ sae: TopKSAE<Double>, prefix: String, suffix: String, dtype: SafetensorsDType) -> SafetensorsFile {
        var st = SafetensorsFile()
        for name in SAETensors<Double>.Name.allCases {
            st.tensors[prefix + name.rawValue + suffix] = SafetensorsTensor(dtype: dtype, shape: sae.tensors.shape(name), values: sae.tensors[name])
        }
        return st
    }

    /// The hooks: TransformerLens' names when the model file names a
    /// TransformerLens model and a layer; else the hook_in/hook_out recorded
    /// in the model file or in the activations file it was trained on; else "unknown".
    static func readHooks(_ modelPath: String) throws -> Hooks {
        let f = try HDF5File.open(modelPath)
        var h = Hooks()
        let source = try? f.stringAttribute("source_model")
        h.layer = (try? f.intAttribute("layer")) ?? nil
        if let s = source ?? nil, !s.isEmpty, !s.contains(where: { $0.isWhitespace || $0 == ":" }) {
            h.modelName = s
            if let l = h.layer {
                h.hookIn = "blocks.\(l).ln2.hook_normalized"; h.hookOut = "blocks.\(l).hook_mlp_out"
                return h
            }
        }
        var candidates = [f]
        if let a = (try? f.stringAttribute("activations_file")) ?? nil, let af = try? HDF5File.open(a) { candidates.append(af) }
        for file in candidates {
            if let i = (try? file.stringAttribute("hook_in")) ?? nil, let o = (try? file.stringAttribute("hook_out")) ?? nil {
                h.hookIn = i; h.hookOut = o
                return h
            }
        }
        return h
    }
}

/// Whether every value is a Float exactly, so F32 loses nothing.
private func exactlyFloat(_ arrays: [[Double]]) -> Bool {
    arrays.allSatisfy { $0.allSatisfy { Double(Float($0)) == $0 } }
}

private func json(_ object: [String: Any]) throws -> Data {
    do {
        var d = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        d.append(UInt8(ascii: "\n"))
        return d
    } catch {
        throw JSAEError("cannot encode a config as JSON: \(error)")
    }
}
