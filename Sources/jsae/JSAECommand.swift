import ArgumentParser
import Foundation
import JSAECore
import JSAEIO
import JSAERuns
import JSAECLIOptions

@main
struct JSAECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jsae",
        abstract: "Jacobian Sparse Autoencoders: reference forward pass, Jacobian and file tools.",
        subcommands: [Forward.self, Train.self, ReproduceCommand.self, EvaluateCommand.self, Inspect.self, Import.self, Export.self])

    static func main() { runWithOneLineErrors(JSAECommand.self, program: "jsae") }
}

/// Library errors become one line on stderr and an exit status: 2 for bad
/// input or configuration, 3 for a training run that diverged. Anything else
/// is left to ArgumentParser.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as JSAEError {
        exitAtOnce(2, "jsae: error: \(e.description)")
    } catch let e as TrainingDiverged {
        exitAtOnce(3, "jsae: error: \(e.description)")
    }
}

/// A library rule's refusal as ArgumentParser's, for `validate()`.
func asValidation(_ rule: () throws -> Void) throws {
    do { try rule() } catch let e as JSAEError { throw ValidationError(e.description) }
}

enum Precision: String, ExpressibleByArgument, CaseIterable {
    case float, double
}

/// A subcommand whose work is generic over the computing precision.
protocol PrecisionCommand {
    var precision: Precision { get }
    func run<T: JSAEScalar>(_: T.Type) throws
}

extension PrecisionCommand {
    /// Runs in the chosen precision, reporting library errors as one line.
    func runInPrecision() throws {
        try reportingErrors {
            switch precision {
            case .float: try run(Float.self)
            case .double: try run(Double.self)
            }
        }
    }
}

extension EvaluationPoint: ExpressibleByArgument {}

struct Forward: ParsableCommand, PrecisionCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a JSAE pair on activations and write a `forward` HDF5 file.")

    @Option(help: "Model file (kind = model or checkpoint).")
    var model: String

    @Option(help: "Activations file (kind = activations); /x is streamed in chunks.")
    var activations: String

    @Option(help: "Output `forward` file, written to a temporary name and renamed into place.")
    var out: String

    @Option(help: "Where the MLP and the output SAE are evaluated: trueInput (reference code) or reconstruction (paper's f_s).")
    var evaluationPoint: EvaluationPoint = .trueInput

    @Option(help: "Jacobian penalty weight used for the reported loss.")
    var lambda: Double = 1

    @Option(help: "Compute in float or double.")
    var precision: Precision = .float

    @Option(help: "Tokens read and evaluated per chunk (bounds memory).")
    var chunkTokens: Int = 1024

    @Flag(help: "Add /grad/<group>/<name>: the gradient of the training loss for every SAE parameter (trueInput only).")
    var gradients = false

    @Flag(help: "Print progress on stderr.")
    var verbose = false

    func validate() throws {
        try asValidation { try RunRules.requireLambda(lambda) }
        guard chunkTokens >= 1 else { throw ValidationError("--chunk-tokens must be at least 1") }
        guard !gradients || evaluationPoint == .trueInput else {
            throw ValidationError("--gradients is the gradient of the training loss, which is defined at --evaluation-point trueInput")
        }
    }

    func run() throws { try runInPrecision() }

    func run<T: JSAEScalar>(_: T.Type) throws {
        try requireDistinctOutput(out, flag: "--out", from: [("--model", model), ("--activations", activations)])
        let acts = try ActivationsReader(activations)
        let m: JSAEModel<T> = try ModelFile.read(model, mlpFallback: acts.file)
        var opts = ForwardOptions()
        opts.point = evaluationPoint
        opts.lambda = lambda
        opts.chunkTokens = chunkTokens
        opts.gradients = gradients
        let start = Date()
        let c = try runForward(model: m, activations: acts, modelPath: model, outPath: out, options: opts) { done, total in
            if verbose {
                let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
                FileHandle.standardError.write(Data("forward: \(done)/\(total) tokens, \(Int(rate)) tokens/s\n".utf8))
            }
        }
        var line = "wrote \(out): \(acts.tokens) tokens, evaluation_point=\(evaluationPoint.rawValue), mse_in=\(c.mseIn)"
        if m.saeOut != nil { line += ", mse_out=\(c.mseOut), jacobian_l1=\(c.jacobianL1), lambda=\(lambda)" }
        line += ", loss=\(c.loss)"
        print(line)
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a file's kind, root attributes and every dataset's shape and dtype.")

    @Argument(help: "An HDF5 file of any kind.")
    var file: String

    func run() throws {
        try reportingErrors {
            let f = try HDF5File.open(file)
            let kind = (try? f.stringAttribute("kind")) ?? nil
            print("\(file): kind \(kind ?? "(none)")")
            for name in f.attributeNames() where name != "kind" {
                if let v = try f.attribute(name) { print("  @\(name) = \(v)") }
            }
            for (path, type) in f.walk() {
                switch type {
                case .group: print("  \(path)/")
                case .dataset:
                    // inspect is how a user looks at a broken file: a shape no
                    // reader accepts is described as such, not refused.
                    do {
                        let (shape, element) = try f.info(path)
                        print("  \(path)  \(HDF5File.describe(shape))  \(element.name)")
                    } catch let e as JSAEError {
                        print("  \(path)  invalid shape: \(e.message)")
                    }
                }
            }
        }
    }
}
