import Foundation
import JSAECore

/// SAE folders written by other code, as `jsae import` reads them
/// (docs/file-format.md, "Imported and exported SAE folders").
public enum ForeignFormat: String, Sendable {
    /// The authors' pair folder (jugard99/jacobian-saes): both SAEs and the MLP.
    case jsaePair = "jsae-pair"
    case saeLens6 = "saelens-6"
    case saeLensPre6 = "saelens-pre6"
    case sparsify
}

/// A pair read from foreign folders, in the harness's form, with the
/// provenance attributes its model file records.
public struct ImportedPair {
    public var model: JSAEModel<Double>
    public var attributes: [String: AttributeValue]
}

/// cfg.json as read: the raw text (kept in the model file) and its object,
/// with typed accessors that name the file when a value has the wrong type.
struct ForeignConfig {
    let path: String
    let text: String
    let object: [String: Any]

    static let maxBytes = 16 << 20

    init(folder: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir) else { throw JSAEError(file: folder, "does not exist") }
        guard isDir.boolValue else { throw JSAEError(file: folder, "is a file: give the SAE's folder (with cfg.json)") }
        path = folder + "/cfg.json"
        var st = stat()
        guard stat(path, &st) == 0 else { throw JSAEError(file: path, "does not exist: not an SAE folder") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw JSAEError(file: path, "is not a regular file") }
        let size = Int(st.st_size)
        guard size <= Self.maxBytes else { throw JSAEError(file: path, "is \(size) bytes; a config over 16 MiB is refused") }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw JSAEError(file: path, "cannot be read: \(osReason(error))") }
        guard let t = String(validating: data, as: UTF8.self) else { throw JSAEError(file: path, "is not valid UTF-8") }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw JSAEError(file: path, "is not a JSON object")
        }
        text = t; object = o
    }

    private init(path: String, text: String, object: [String: Any]) { self.path = path; self.text = text; self.object = object }

    func has(_ key: String) -> Bool { object[key] != nil && !(object[key] is NSNull) }

    func string(_ key: String) throws -> String? {
        guard has(key) else { return nil }
        guard let s = object[key] as? String else { throw JSAEError(file: path, "\(key) must be a string") }
        return s
    }

    func int(_ key: String) throws -> Int? {
        guard has(key) else { return nil }
        guard let i = object[key] as? Int else { throw JSAEError(file: path, "\(key) must be an integer") }
        return i
    }

    func bool(_ key: String) throws -> Bool? {
        guard has(key) else { return nil }
        guard let b = object[key] as? Bool else { throw JSAEError(file: path, "\(key) must be true or false") }
        return b
    }

    func object(_ key: String) throws -> ForeignConfig? {
        guard has(key) else { return nil }
        guard let o = object[key] as? [String: Any] else { throw JSAEError(file: path, "\(key) must be a JSON object") }
        return ForeignConfig(path: path, text: "", object: o)
    }

    func requiredInt(_ key: String, atLeast low: Int = 1) throws -> Int {
        guard let v = try int(key) else { throw JSAEError(file: path, "has no \(key)") }
        guard v >= low else { throw JSAEError(file: path, "\(key) is \(v), expected at least \(low)") }
        return v
    }

    /// The format, from the keys each writer puts in its config.
    func format() throws -> ForeignFormat {
        if try bool("use_jacobian_loss") == true || bool("is_pair") == true { return .jsaePair }
        if has("num_latents") || has("expansion_factor") { return .sparsify }
        if has("d_sae") { return has("activation_fn") || has("activation_fn_str") ? .saeLensPre6 : .saeLens6 }
        throw JSAEError(file: path, "is not an authors' pair, SAELens or sparsify config (it has no use_jacobian_loss, d_sae or num_latents)")
    }

    /// Only raw inputs are supported: a rescaling the SAE expects cannot be
    /// folded into constant weights.
    func requireNoNormalization() throws {
        switch object["normalize_activations"] {
        case nil, is NSNull: return
        case let s as String where s == "none": return
        case let b as Bool where !b: return
        case let s as String: throw JSAEError(file: path, "normalize_activations \(quoted(s)) is not supported (only \"none\": the SAE expects rescaled inputs)")
        default: throw JSAEError(file: path, "normalize_activations is not supported (only \"none\")")
        }
    }

    /// k of a pre-6 SAELens or authors' config: activation_fn "topk" with activation_fn_kwargs.k.
    func flatTopK() throws -> Int {
        let arch = try string("architecture") ?? "standard"
        guard arch == "standard" else { throw JSAEError(file: path, "architecture \(quoted(arch)) is not supported (only TopK SAEs)") }
        let fn = try string("activation_fn_str") ?? string("activation_fn") ?? "relu"
        guard fn == "topk" else { throw JSAEError(file: path, "activation_fn \(quoted(fn)) is not supported (only \"topk\")") }
        guard let kwargs = try object("activation_fn_kwargs") else { throw JSAEError(file: path, "has no activation_fn_kwargs.k") }
        guard try bool("finetuning_scaling_factor") != true else { throw JSAEError(file: path, "finetuning_scaling_factor is not supported") }
        return try kwargs.requiredInt("k")
    }
}

/// What a folder's SAE adds to the model file's provenance.
struct FolderInfo {
    var format: ForeignFormat
    var config: ForeignConfig
    var modelName: String?
    var hookName: String?
    var layer: Int?
    /// The MLP activation the exporter wrote (`jsae_mlp_activation`), if any.
    var mlpActivation: String?
}

public enum ForeignImport {
    /// The authors' pair folder: both SAEs and the MLP.
    public static func pair(folder: String, activation: Activation?) throws -> ImportedPair {
        let cfg = try ForeignConfig(folder: folder)
        let format = try cfg.format()
        guard format == .jsaePair else {
            throw JSAEError(file: cfg.path, "is a single SAE (\(format.rawValue)): give two folders with --sae-in and --sae-out, and the MLP with --mlp")
        }
        try cfg.requireNoNormalization()
        let k = try cfg.flatTopK()
        let d = try cfg.requiredInt("d_in"), m = try cfg.requiredInt("d_sae")
        // The authors' loader defaults apply_b_dec_to_input to true (handle_config_defaulting).
        let subtract = try cfg.bool("apply_b_dec_to_input") ?? true
        let path = folder + "/sae_weights.safetensors"
        let st = try SafetensorsFile.read(path)
        try requireNoScaling(st, path)
        let saeIn = try readSAE(st, path, names: ("_W_enc", "_b_enc", "_W_dec", "_b_dec"), d: d, m: m, k: k, subtract: subtract, transposedEncoder: false)
        let saeOut = try readSAE(st, path, names: ("_W_enc_out", "_b_enc_out", "_W_dec_out", "_b_dec_out"), d: d, m: m, k: k, subtract: subtract, transposedEncoder: false)
        let info = FolderInfo(format: .jsaePair, config: cfg, modelName: try cfg.string("model_name"), hookName: try cfg.string("hook_name"),
                              layer: try cfg.int("hook_layer"), mlpActivation: try cfg.string("jsae_mlp_activation"))
        let (act, actSource) = try chooseActivation(activation, info, fallback: nil, path: cfg.path)
        let wIn = try tensor(st, path, "mlp.W_in", rows: d, cols: nil)
        let dMlp = wIn.count / d
        let mlp = try attributing(path) {
            try MLP(wIn: Matrix(rows: d, cols: dMlp, data: wIn), bIn: tensor(st, path, "mlp.b_in", [dMlp]),
                    wOut: Matrix(rows: dMlp, cols: d, data: tensor(st, path, "mlp.W_out", [dMlp, d])),
                    bOut: tensor(st, path, "mlp.b_out", [d]), activation: act)
        }
        let model = try attributing(path) { try JSAEModel(saeIn: saeIn, saeOut: saeOut, mlp: mlp) }
        var attrs = provenance(info, info, activationSource: actSource)
        attrs["import_format"] = .string(ForeignFormat.jsaePair.rawValue)
        attrs["import_source"] = .string(absolute(folder))
        attrs["import_source_config"] = .string(cfg.text)
        return ImportedPair(model: model, attributes: attrs)
    }

    /// Two single-SAE folders (SAELens 6 or earlier, or sparsify) and the MLP
    /// of an activations or model file.
    public static func pair(saeIn: String, saeOut: String, mlpFile: String, activation: Activation?) throws -> ImportedPair {
        let (inInfo, inSAE) = try single(saeIn)
        let (outInfo, outSAE) = try single(saeOut)
        guard outSAE.d == inSAE.d else {
            throw JSAEError(file: outInfo.config.path, "has d_in = \(outSAE.d) but the input SAE \(inInfo.config.path) has d_in = \(inSAE.d)")
        }
        guard outSAE.k == inSAE.k else {
            throw JSAEError(file: outInfo.config.path, "has k = \(outSAE.k) but the input SAE \(inInfo.config.path) has k = \(inSAE.k)")
        }
        let f = try HDF5File.open(mlpFile)
        try FileFormat.checkHeader(f, accepted: [.activations, .model, .checkpoint])
        guard f.exists("/mlp") else { throw JSAEError(file: mlpFile, "has no /mlp: give an activations or model file with the MLP") }
        let fileMLP: MLP<Double> = try MLPFile.read(f, d: nil)
        guard fileMLP.d == inSAE.d else {
            throw JSAEError(file: mlpFile, "has an MLP with d = \(fileMLP.d) but the SAEs have d_in = \(inSAE.d)")
        }
        let fileActivation = try f.stringAttribute("activation") != nil ? fileMLP.activation : nil
        let (act, actSource) = try chooseActivation(activation, inInfo, fallback: fileActivation, path: inInfo.config.path)
        var mlp = fileMLP
        mlp.activation = act
        let model = try attributing(mlpFile) { try JSAEModel(saeIn: inSAE, saeOut: outSAE, mlp: mlp) }
        var attrs = provenance(inInfo, outInfo, activationSource: actSource)
        attrs["import_format"] = .string("sae_in: \(inInfo.format.rawValue), sae_out: \(outInfo.format.rawValue)")
        attrs["import_source"] = .string("sae_in: \(absolute(saeIn)), sae_out: \(absolute(saeOut)), mlp: \(absolute(mlpFile))")
        attrs["import_source_config_in"] = .string(inInfo.config.text)
        attrs["import_source_config_out"] = .string(outInfo.config.text)
        return ImportedPair(model: model, attributes: attrs)
    }

    /// One SAE folder in any single-SAE format.
    static func single(_ folder: String) throws -> (FolderInfo, TopKSAE<Double>) {
        let cfg = try ForeignConfig(folder: folder)
        let format = try cfg.format()
        try cfg.requireNoNormalization()
        switch format {
        case .jsaePair:
            throw JSAEError(file: cfg.path, "is an authors' pair folder: import it whole with `jsae import \(folder)`")
        case .saeLens6, .saeLensPre6:
            let k: Int
            if format == .saeLens6 {
                let arch = try cfg.string("architecture") ?? "standard"
                guard arch == "topk" else { throw JSAEError(file: cfg.path, "architecture \(quoted(arch)) is not supported (only \"topk\")") }
                k = try cfg.requiredInt("k")
                guard try cfg.bool("rescale_acts_by_decoder_norm") != true else { throw JSAEError(file: cfg.path, "rescale_acts_by_decoder_norm is not supported") }
                let reshape = try cfg.string("reshape_activations") ?? "none"
                guard reshape == "none" else { throw JSAEError(file: cfg.path, "reshape_activations \(quoted(reshape)) is not supported (only \"none\")") }
            } else {
                k = try cfg.flatTopK()
            }
            let d = try cfg.requiredInt("d_in"), m = try cfg.requiredInt("d_sae")
            // SAELens' default for apply_b_dec_to_input is true.
            let subtract = try cfg.bool("apply_b_dec_to_input") ?? true
            let path = folder + "/sae_weights.safetensors"
            let st = try SafetensorsFile.read(path)
            try requireNoScaling(st, path)
            // The authors' code (a SAELens 4 fork) names a single SAE's tensors with a leading underscore.
            let p = st.tensors["W_enc"] == nil && st.tensors["_W_enc"] != nil ? "_" : ""
            let sae = try readSAE(st, path, names: (p + "W_enc", p + "b_enc", p + "W_dec", p + "b_dec"), d: d, m: m, k: k, subtract: subtract, transposedEncoder: false)
            let meta = try cfg.object("metadata")
            let hook = try meta?.string("hook_name") ?? cfg.string("hook_name")
            let info = FolderInfo(format: format, config: cfg, modelName: try meta?.string("model_name") ?? cfg.string("model_name"),
                                  hookName: hook, layer: try cfg.int("hook_layer") ?? hook.flatMap(layerOfHook),
                                  mlpActivation: try cfg.string("jsae_mlp_activation"))
            return (info, sae)
        case .sparsify:
            let act = try cfg.string("activation") ?? "topk"
            guard act == "topk" else { throw JSAEError(file: cfg.path, "activation \(quoted(act)) is not supported (only \"topk\")") }
            guard try cfg.bool("transcode") != true else { throw JSAEError(file: cfg.path, "transcode is true: a transcoder is not supported") }
            guard try cfg.bool("skip_connection") != true else { throw JSAEError(file: cfg.path, "skip_connection is true: not supported") }
            let k = try cfg.requiredInt("k")
            let d = try cfg.requiredInt("d_in")
            let m: Int
            if let n = try cfg.int("num_latents"), n > 0 { m = n } else {
                let e = try cfg.requiredInt("expansion_factor")
                let (p, o) = e.multipliedReportingOverflow(by: d)
                guard !o else { throw JSAEError(file: cfg.path, "expansion_factor \(e) × d_in \(d) overflows") }
                m = p
            }
            let path = folder + "/sae.safetensors"
            let st = try SafetensorsFile.read(path)
            // sparsify's encoder always sees x − b_dec (Sae.pre_acts).
            let sae = try readSAE(st, path, names: ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), d: d, m: m, k: k, subtract: true, transposedEncoder: true)
            let hook = URL(fileURLWithPath: folder).standardizedFileURL.lastPathComponent
            let info = FolderInfo(format: .sparsify, config: cfg, modelName: nil, hookName: hook, layer: nil, mlpActivation: nil)
            return (info, sae)
        }
    }
}

/// The four tensors of one SAE, checked against the config's d and m, with
/// the b_dec subtraction folded into b_enc in Double:
/// (x − b_dec)·W_enc + b_enc = x·W_enc + (b_enc − b_dec·W_enc).
private func readSAE(_ st: SafetensorsFile, _ path: String, names: (String, String, String, String), d: Int, m: Int, k: Int,
                     subtract: Bool, transposedEncoder: Bool) throws -> TopKSAE<Double> {
    var wEnc: [Double]
    if transposedEncoder {
        let t = try tensor(st, path, names.0, [m, d])   // nn.Linear weight [out, in]
        wEnc = [Double](repeating: 0, count: d * m)
        for j in 0..<m { for i in 0..<d { wEnc[i * m + j] = t[j * d + i] } }
    } else {
        wEnc = try tensor(st, path, names.0, [d, m])
    }
    var bEnc = try tensor(st, path, names.1, [m])
    let wDec = try tensor(st, path, names.2, [m, d])
    let bDec = try tensor(st, path, names.3, [d])
    if subtract {
        for j in 0..<m {
            var s = 0.0
            for i in 0..<d { s += bDec[i] * wEnc[i * m + j] }
            bEnc[j] -= s
        }
    }
    return try attributing(path) {
        try TopKSAE(wEnc: Matrix(rows: d, cols: m, data: wEnc), bEnc: bEnc, wDec: Matrix(rows: m, cols: d, data: wDec), bDec: bDec, k: k)
    }
}

/// SAELens' loader drops a `scaling_factor` of all ones and otherwise
/// multiplies the latents by it; the harness's TopK SAE has no such factor.
private func requireNoScaling(_ st: SafetensorsFile, _ path: String) throws {
    for name in ["scaling_factor", "finetuning_scaling_factor", "_finetuning_scaling_factor"] {
        if let t = st.tensors[name], t.values.contains(where: { $0 != 1 }) {
            throw JSAEError(file: path, "tensor \(quoted(name)) is not all ones: a latent scaling factor is not supported")
        }
    }
}

/// A tensor's values, after checking its presence, exact shape and finiteness.
private func tensor(_ st: SafetensorsFile, _ path: String, _ name: String, _ shape: [Int]) throws -> [Double] {
    guard let t = st.tensors[name] else { throw JSAEError(file: path, "has no tensor \(quoted(name))") }
    guard t.shape == shape else {
        throw JSAEError(file: path, "tensor \(quoted(name)) has shape \(HDF5File.describe(t.shape)), expected \(HDF5File.describe(shape)) (from cfg.json)")
    }
    if let i = t.values.firstIndex(where: { !$0.isFinite }) {
        throw JSAEError(file: path, "tensor \(quoted(name)) contains \(t.values[i].isNaN ? "NaN" : "Inf") at flat index \(i)")
    }
    return t.values
}

/// A matrix tensor with `rows` rows (and `cols` columns when given).
private func tensor(_ st: SafetensorsFile, _ path: String, _ name: String, rows: Int, cols: Int?) throws -> [Double] {
    guard let t = st.tensors[name] else { throw JSAEError(file: path, "has no tensor \(quoted(name))") }
    guard t.shape.count == 2, t.shape[0] == rows, t.shape[1] >= 1, cols == nil || t.shape[1] == cols else {
        throw JSAEError(file: path, "tensor \(quoted(name)) has shape \(HDF5File.describe(t.shape)), expected [\(rows), \(cols.map(String.init) ?? "d_mlp")]")
    }
    return try tensor(st, path, name, t.shape)
}

private func attributing<R>(_ path: String, _ body: () throws -> R) throws -> R {
    do { return try body() } catch let e as JSAEError { throw e.inFile(path) }
}

/// The MLP's nonlinearity: --activation, else what an exporter recorded, else
/// the model's name (Pythia and GPT-NeoX: exact gelu; GPT-2: tanh), else the
/// MLP file's own attribute.
private func chooseActivation(_ flag: Activation?, _ info: FolderInfo, fallback: Activation?, path: String) throws -> (Activation, String) {
    if let flag { return (flag, "--activation") }
    if let name = info.mlpActivation {
        guard let a = Activation(rawValue: name) else { throw JSAEError(file: path, "jsae_mlp_activation \(quoted(name)) is not gelu or gelu_tanh") }
        return (a, "jsae_mlp_activation in cfg.json")
    }
    if let model = info.modelName, let a = ForeignImport.activation(forModel: model) { return (a, "model_name \(model)") }
    if let fallback { return (fallback, "the MLP file's activation attribute") }
    throw JSAEError(file: path, "cannot tell the MLP's activation from model_name \(info.modelName.map(quoted) ?? "(none)"): give --activation gelu or gelu_tanh")
}

extension ForeignImport {
    /// The MLP nonlinearity of a TransformerLens model name, when known.
    public static func activation(forModel name: String) -> Activation? {
        let n = name.lowercased()
        if n.contains("pythia") || n.contains("neox") { return .gelu }
        if n.contains("gpt2") || n.contains("gpt-2") { return .geluTanh }
        return nil
    }
}

/// L of a TransformerLens hook name "blocks.L.…".
func layerOfHook(_ hook: String) -> Int? {
    let parts = hook.split(separator: ".")
    guard parts.count >= 2, parts[0] == "blocks" else { return nil }
    return Int(parts[1])
}

private func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }

private func provenance(_ a: FolderInfo, _ b: FolderInfo, activationSource: String) -> [String: AttributeValue] {
    var attrs: [String: AttributeValue] = ["note": .string("imported by jsae import"), "activation_source": .string(activationSource)]
    if let m = a.modelName ?? b.modelName { attrs["source_model"] = .string(m) }
    if let l = a.layer ?? b.layer { attrs["layer"] = .int(l) }
    if let h = a.hookName { attrs["hook_in"] = .string(h) }
    // The authors' pair names only its input hook; the MLP output of that layer is the other.
    if a.format == .jsaePair, let l = a.layer { attrs["hook_out"] = .string("blocks.\(l).hook_mlp_out") }
    else if let h = b.hookName { attrs["hook_out"] = .string(h) }
    return attrs
}
