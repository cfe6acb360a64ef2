import Foundation
import JSAECore
import JSAEIO

/// Which run of a reproduction: a method on a kind of data, or a point of the
/// λ sweep. `name` is its folder under runs/ and its name in summary.json.
public struct RunID: Hashable, Sendable, CustomStringConvertible {
    /// A JSAE pair (λ > 0) or a traditional pair (λ 0).
    public enum Method: String, Sendable, CaseIterable { case jsae, traditional }
    /// The activations a run trains and is evaluated on.
    public enum Data: Hashable, Sendable {
        case pretrained, randomized
        /// One layer of a layer sweep (pre-trained).
        case layer(Int)
        /// The key of the data's split, eval set and DataFacts ("pretrained", "randomized", "l3").
        public var key: String {
            switch self {
            case .pretrained: "pretrained"
            case .randomized: "randomized"
            case .layer(let l): "l\(l)"
            }
        }
    }
    public var method: Method
    public var data: Data
    /// λ of a λ-sweep point: a JSAE on pre-trained data at another λ than the main runs'.
    public var sweepLambda: Double?

    /// A main run (no sweep λ).
    public init(_ method: Method, _ data: Data) { self.method = method; self.data = data }
    /// The λ-sweep point at `lambda`.
    public static func sweep(lambda: Double) -> RunID {
        var id = RunID(.jsae, .pretrained); id.sweepLambda = lambda; return id
    }
    public static let jsaePretrained = RunID(.jsae, .pretrained), traditionalPretrained = RunID(.traditional, .pretrained)
    public static let jsaeRandomized = RunID(.jsae, .randomized), traditionalRandomized = RunID(.traditional, .randomized)
    /// The four runs every reproduction trains, in report order.
    public static let main = [jsaePretrained, traditionalPretrained, jsaeRandomized, traditionalRandomized]

    /// "jsae-pretrained", "traditional-l3", "sweep-lambda-0.5".
    public var name: String {
        if let sweepLambda { return "sweep-lambda-\(sweepLambda)" }
        switch data {
        case .layer(let l): return "\(method.rawValue)-l\(l)"
        default: return "\(method.rawValue)-\(data.key)"
        }
    }
    public var description: String { name }

    /// The identity a run name spells (nil: not a reproduction's run name).
    public init?(name: String) {
        if name.hasPrefix("sweep-lambda-") {
            guard let l = Double(name.dropFirst("sweep-lambda-".count)), l.isFinite else { return nil }
            self = .sweep(lambda: l)
            guard self.name == name else { return nil }
            return
        }
        guard let dash = name.firstIndex(of: "-"), let method = Method(rawValue: String(name[..<dash])) else { return nil }
        let rest = name[name.index(after: dash)...]
        switch rest {
        case "pretrained": self.init(method, .pretrained)
        case "randomized": self.init(method, .randomized)
        default:
            guard rest.hasPrefix("l"), let l = Int(rest.dropFirst()), l >= 0, "l\(l)" == rest else { return nil }
            self.init(method, .layer(l))
        }
    }
}

extension RunPlan {
    init(_ id: RunID, lambda: Double) { self.init(name: id.name, data: id.data.key, lambda: lambda) }
}

extension Array where Element == RunSummary {
    /// The run with this identity, if it is here.
    public subscript(_ id: RunID) -> RunSummary? { first { $0.name == id.name } }
}

/// One of the paper's |J| thresholds (`JacobianStats.thresholds`).
public enum JacobianThreshold: Int, Sendable, CaseIterable {
    case above0_005, above0_01, above0_015, above0_02
    public var value: Double { JacobianStats.thresholds[rawValue] }
    /// |J| > 0.01: the paper's headline.
    public static let headline = above0_01
}

/// Shares of |J| entries above each `JacobianThreshold`. summary.json stores
/// them as an array in threshold order.
public struct JacobianShares: Codable, Sendable, Equatable {
    /// One share per `JacobianThreshold`, in its order.
    public private(set) var values: [Double]
    /// The shares of |J| > t the counts give.
    public init(_ counts: ThresholdCounts) { values = counts.sharesAbove }
    public subscript(_ t: JacobianThreshold) -> Double { values[t.rawValue] }
    /// The share above the paper's headline threshold, 0.01.
    public var headline: Double { self[.headline] }
    public init(from decoder: Decoder) throws {
        values = try decoder.singleValueContainer().decode([Double].self)
        guard values.count == JacobianThreshold.allCases.count else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "\(values.count) shares, expected one per threshold (\(JacobianThreshold.allCases.count))"))
        }
    }
    public func encode(to encoder: Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(values) }
}

/// One evaluation of a run: an evaluation point, on the model as trained or
/// on the processed model the authors' analysis loads. summary.json spells
/// it as the point's name, prefixed "processed-" for the processed model.
public struct EvaluationKey: Hashable, Sendable, Codable, CodingKeyRepresentable, CustomStringConvertible {
    /// Where J is taken.
    public var point: EvaluationPoint
    /// Which model: as trained, or processed.
    public var path: ModelPath
    public init(_ point: EvaluationPoint, _ path: ModelPath = .consistent) { self.point = point; self.path = path }
    public static let trueInput = EvaluationKey(.trueInput), reconstruction = EvaluationKey(.reconstruction)
    public static let processedTrueInput = EvaluationKey(.trueInput, .processed)

    /// "trueInput", "reconstruction", "processed-trueInput".
    public var description: String { path == .consistent ? point.rawValue : "\(path.rawValue)-\(point.rawValue)" }
    /// The key `text` spells (nil: none).
    public init?(_ text: String) {
        let processed = ModelPath.processed.rawValue + "-"
        let path: ModelPath = text.hasPrefix(processed) ? .processed : .consistent
        guard let point = EvaluationPoint(rawValue: path == .processed ? String(text.dropFirst(processed.count)) : text) else { return nil }
        self.init(point, path)
    }
    public var codingKey: CodingKey { AnyKey(description) }
    public init?<T: CodingKey>(codingKey: T) { self.init(codingKey.stringValue) }
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let key = EvaluationKey(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(text) is not an evaluation"))
        }
        self = key
    }
    public func encode(to encoder: Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(description) }
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// The held-out measures of one evaluation at the true input: a run's final
/// evaluation and each scale-curve snapshot. summary.json keeps them flat
/// beside the run's or snapshot's other fields.
public struct HeldOutMetrics: Codable, Sendable, Equatable {
    /// Explained variance of x by x̂ and of f(x) by ŷ.
    public var explainedVarianceIn: Double, explainedVarianceOut: Double
    /// Mean squared error per element, as the loss normalises it.
    public var mseIn: Double, mseOut: Double
    /// Mean active latents per token.
    public var l0In: Double, l0Out: Double
    /// Latents never active on the evaluated tokens.
    public var deadIn: Int, deadOut: Int
    /// Σ|J|/(B·k²): the loss's Jacobian term before λ (nil in summaries that predate it).
    public var jacobianL1: Double?

    /// The [tokens, k] TopK codes of both SAEs over an evaluation's tokens.
    struct Codes {
        var indicesIn: [Int] = [], valuesIn: [Float] = [], indicesOut: [Int] = [], valuesOut: [Float] = []
    }
    /// The measures of one pass over `x`.
    init(x: Matrix<Float>, xHat: Matrix<Float>, y: Matrix<Float>, yHat: Matrix<Float>, codes: Codes, mIn: Int, mOut: Int,
         mseIn: Double, mseOut: Double, jacobianL1: Double) {
        func l0(_ v: [Float]) -> Double { v.withUnsafeBufferPointer { meanL0(values: $0, tokens: x.rows) } }
        // One "step" over the whole evaluation: a latent is dead when no token activates it.
        let tracker = DeadLatentTracker(mIn: mIn, mOut: mOut, startStep: 0)
        for (indices, values, output) in [(codes.indicesIn, codes.valuesIn, false), (codes.indicesOut, codes.valuesOut, true)] {
            indices.withUnsafeBufferPointer { i in values.withUnsafeBufferPointer { tracker.record(indices: i, values: $0, output: output, step: 0) } }
        }
        let dead = tracker.dead(atStep: 1, window: 1)
        self.init(explainedVarianceIn: explainedVariance(x, xHat), explainedVarianceOut: explainedVariance(y, yHat),
                  mseIn: mseIn, mseOut: mseOut, l0In: l0(codes.valuesIn), l0Out: l0(codes.valuesOut),
                  deadIn: dead.input, deadOut: dead.output, jacobianL1: jacobianL1)
    }
    public init(explainedVarianceIn: Double, explainedVarianceOut: Double, mseIn: Double, mseOut: Double,
                l0In: Double, l0Out: Double, deadIn: Int, deadOut: Int, jacobianL1: Double?) {
        self.explainedVarianceIn = explainedVarianceIn; self.explainedVarianceOut = explainedVarianceOut
        self.mseIn = mseIn; self.mseOut = mseOut; self.l0In = l0In; self.l0Out = l0Out
        self.deadIn = deadIn; self.deadOut = deadOut; self.jacobianL1 = jacobianL1
    }
    /// Mean explained variance of the two SAEs.
    public var meanExplainedVariance: Double { (explainedVarianceIn + explainedVarianceOut) / 2 }
    /// How much lower `other`'s mean explained variance is than this one's (the JSAE's reconstruction cost against a traditional pair).
    public func explainedVarianceCost(of other: HeldOutMetrics) -> Double {
        (explainedVarianceIn + explainedVarianceOut - other.explainedVarianceIn - other.explainedVarianceOut) / 2
    }
}

/// Every number of one run's final evaluation, also in summary.json.
public struct RunSummary: Codable, Sendable {
    /// The run's name (`RunID.name`, or "pair" for `jsae evaluate`).
    public var name: String
    /// The data's key (`RunID.Data.key`) or, for `jsae evaluate`, the activations file.
    public var data: String
    public var lambda: Double
    /// The forward file of each evaluation.
    public var forwardFiles: [EvaluationKey: String]
    /// Shares of |J| above each threshold, per evaluation.
    public var shares: [EvaluationKey: JacobianShares]
    /// At the true input.
    public var metrics: HeldOutMetrics
    /// The x̂ variant's linear / JumpReLU / other shares, ablation agreement and samples (also in `analyses`).
    public var linearity: [String: Double]
    public var ablationAgreement: Double
    public var samples: Int
    /// Per forward file: entries against each threshold, >, ≥ and as the authors count.
    public var thresholdCounts: [EvaluationKey: ThresholdCounts]? = nil
    /// f_s linearity and ablation: the authors' variant, the x̂ variant and, on pre-trained data, the processed model.
    public var analyses: [ConnectionAnalysis]? = nil
    /// Optimizer steps, training tokens (steps · batch), distinct training
    /// rows available, and passes over them (tokens / rows).
    public var steps: Int? = nil, trainedTokens: Int? = nil, trainingRows: Int? = nil
    public var epochs: Double? = nil
    /// Batches in the shuffling buffer this run used.
    public var shuffleBufferBatches: Int? = nil
    /// Wall time of training plus evaluation, summed over sessions when resumed.
    public var wallSeconds: Double? = nil
    /// The scale curve: held-out evaluations at the snapshot steps.
    public var snapshots: [Snapshot]? = nil

    /// The share of |J| > 0.01 at the true input: the paper's headline.
    public var headlineShare: Double { shares[.trueInput]?.headline ?? .nan }

    init(name: String, data: String, lambda: Double, forwardFiles: [EvaluationKey: String], shares: [EvaluationKey: JacobianShares],
         metrics: HeldOutMetrics, linearity: [String: Double], ablationAgreement: Double, samples: Int,
         thresholdCounts: [EvaluationKey: ThresholdCounts]?, analyses: [ConnectionAnalysis]?) {
        self.name = name; self.data = data; self.lambda = lambda; self.forwardFiles = forwardFiles; self.shares = shares
        self.metrics = metrics; self.linearity = linearity; self.ablationAgreement = ablationAgreement; self.samples = samples
        self.thresholdCounts = thresholdCounts; self.analyses = analyses
    }

    enum CodingKeys: String, CodingKey {
        case name, data, lambda, forwardFiles, shares, linearity, ablationAgreement, samples, thresholdCounts, analyses
        case steps, trainedTokens, trainingRows, epochs, shuffleBufferBatches, wallSeconds, snapshots
    }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name); data = try c.decode(String.self, forKey: .data)
        lambda = try c.decode(Double.self, forKey: .lambda)
        forwardFiles = try c.decode([EvaluationKey: String].self, forKey: .forwardFiles)
        shares = try c.decode([EvaluationKey: JacobianShares].self, forKey: .shares)
        metrics = try HeldOutMetrics(from: decoder)
        linearity = try c.decode([String: Double].self, forKey: .linearity)
        ablationAgreement = try c.decode(Double.self, forKey: .ablationAgreement); samples = try c.decode(Int.self, forKey: .samples)
        thresholdCounts = try c.decodeIfPresent([EvaluationKey: ThresholdCounts].self, forKey: .thresholdCounts)
        analyses = try c.decodeIfPresent([ConnectionAnalysis].self, forKey: .analyses)
        steps = try c.decodeIfPresent(Int.self, forKey: .steps); trainedTokens = try c.decodeIfPresent(Int.self, forKey: .trainedTokens)
        trainingRows = try c.decodeIfPresent(Int.self, forKey: .trainingRows); epochs = try c.decodeIfPresent(Double.self, forKey: .epochs)
        shuffleBufferBatches = try c.decodeIfPresent(Int.self, forKey: .shuffleBufferBatches)
        wallSeconds = try c.decodeIfPresent(Double.self, forKey: .wallSeconds)
        snapshots = try c.decodeIfPresent([Snapshot].self, forKey: .snapshots)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(data, forKey: .data); try c.encode(lambda, forKey: .lambda)
        try c.encode(forwardFiles, forKey: .forwardFiles); try c.encode(shares, forKey: .shares)
        try c.encode(linearity, forKey: .linearity); try c.encode(ablationAgreement, forKey: .ablationAgreement)
        try c.encode(samples, forKey: .samples)
        try c.encodeIfPresent(thresholdCounts, forKey: .thresholdCounts); try c.encodeIfPresent(analyses, forKey: .analyses)
        try c.encodeIfPresent(steps, forKey: .steps); try c.encodeIfPresent(trainedTokens, forKey: .trainedTokens)
        try c.encodeIfPresent(trainingRows, forKey: .trainingRows); try c.encodeIfPresent(epochs, forKey: .epochs)
        try c.encodeIfPresent(shuffleBufferBatches, forKey: .shuffleBufferBatches); try c.encodeIfPresent(wallSeconds, forKey: .wallSeconds)
        try c.encodeIfPresent(snapshots, forKey: .snapshots)
        // The same object: the metrics' keys sit beside the run's.
        try metrics.encode(to: encoder)
    }
}

/// One held-out evaluation of a run part-way (or at the end of) training, at the true input.
public struct Snapshot: Codable, Sendable, Equatable {
    /// Optimizer steps done, and training tokens seen (steps · batch).
    public var step: Int
    public var tokens: Int
    /// At the true input.
    public var shares: JacobianShares
    public var metrics: HeldOutMetrics

    init(step: Int, tokens: Int, shares: JacobianShares, metrics: HeldOutMetrics) {
        self.step = step; self.tokens = tokens; self.shares = shares; self.metrics = metrics
    }
    enum CodingKeys: String, CodingKey { case step, tokens, shares }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        step = try c.decode(Int.self, forKey: .step); tokens = try c.decode(Int.self, forKey: .tokens)
        shares = try c.decode(JacobianShares.self, forKey: .shares)
        metrics = try HeldOutMetrics(from: decoder)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(step, forKey: .step); try c.encode(tokens, forKey: .tokens); try c.encode(shares, forKey: .shares)
        try metrics.encode(to: encoder)
    }
}

/// The paper's figures (jsae-spec.md), Pythia-70m layer 3 unless noted, and
/// how reports print them.
enum PaperFigures {
    static let jsaeShare = 0.113, tradShare = 0.688, jsaeShareRandom = 0.336, tradShareRandom = 0.869
    /// The paper's share of |J| > 0.01 for each of the main runs.
    static func share(_ id: RunID) -> Double? {
        switch (id.method, id.data, id.sweepLambda) {
        case (.jsae, .pretrained, nil): jsaeShare
        case (.traditional, .pretrained, nil): tradShare
        case (.jsae, .randomized, nil): jsaeShareRandom
        case (.traditional, .randomized, nil): tradShareRandom
        default: nil
        }
    }
    static let ratio = tradShare / jsaeShare, ratioRandom = tradShareRandom / jsaeShareRandom
    /// Pythia-410m layer 15, as their figure's files name it.
    static let jsaeLinearity = ["linear": 0.868, "JumpReLU": 0.104, "other": 0.028]
    static let tradLinearity = ["linear": 0.719, "JumpReLU": 0.145, "other": 0.136]
    static let ablation = 0.975
    /// Their notebook's stored output for the file of that figure.
    static let ablationNotebook = 0.977
    /// (λ, share of |J| > 0.01) on Pythia-70m.
    static let sweep: [(Double, Double)] = [(0.01, 0.51), (0.5, 0.21), (1, 0.082), (3, 0.042)]
    /// The paper trains on 100M tokens.
    static let tokens = 100_000_000

    /// A share as the report prints it: "11.3%".
    static func percent(_ v: Double) -> String { String(format: "%.1f%%", 100 * v) }
    /// A ratio as the report prints it: "6.1×".
    static func times(_ v: Double) -> String { String(format: "%.1f×", v) }
    /// The λ sweep in one line: "51% / 21% / 8.2% / 4.2% at λ = 0.01 / 0.5 / 1 / 3".
    static var sweepLine: String {
        sweep.map { String(format: "%.2g%%", 100 * $0.1) }.joined(separator: " / ") + " at λ = "
            + sweep.map { String(format: "%g", $0.0) }.joined(separator: " / ")
    }
}
