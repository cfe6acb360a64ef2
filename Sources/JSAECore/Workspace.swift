#if canImport(Glibc)
import Glibc
#endif

/// Every buffer a training step or an evaluation needs, allocated once per
/// run and sized from the shapes, so that a step allocates nothing
/// (tested). It is also the forward pass's activation cache, which the
/// backward pass reads. Kernels get raw pointers into it; the workspace
/// outlives every step that uses it.
///
/// Shapes (docs/jsae-spec.md): B tokens at most, d, m_in, m_out, d_mlp, k.
public final class Workspace<T: JSAEScalar> {
    public let shape: WorkspaceShape
    /// Threads for the package's own loops and the tiles of its products
    /// (OpenBLAS itself runs on one thread, see `BLASThreads`).
    public let threads: Int

    // MARK: Forward cache (docs/jsae-spec.md, "Forward pass")
    /// Tokens of the current batch (≤ shape.tokens).
    public internal(set) var tokens = 0
    /// [B, d] the input batch, and the output SAE's target when one was given.
    let x: Buffer<T>
    /// Allocated on first use: most runs have no target (the bench, files without /y).
    lazy var yTarget = Buffer<T>(shape.tokens * shape.d)
    var hasYTarget = false
    /// Input SAE codes [B, k] and reconstruction [B, d].
    let codesIn: CodesBuffer<T>
    let xHat: Buffer<T>
    /// MLP: φ' [B, d_mlp] and the output f(·) [B, d]. The hidden activations
    /// are needed only inside the MLP's forward, so they live in `arena`.
    let phi: Buffer<T>, y: Buffer<T>
    /// Output SAE codes and reconstruction.
    let codesOut: CodesBuffer<T>
    let yHat: Buffer<T>
    /// wd1 [m_in, d_mlp] and w2eᵀ [m_out, d_mlp] (docs/jsae-spec.md, "The Jacobian").
    let wd1: Buffer<T>, w2eT: Buffer<T>
    /// Per-token |J| sums and threshold counts, reduced in token order.
    let jacobianAbs: Buffer<Double>
    let jacobianCounts: Buffer<Int32>
    /// [B, k, k] every token's J (only with `.storeJacobian`).
    let jacobian: Buffer<T>
    /// The order the Jacobian pass visits the batch's tokens in (Jacobian.swift).
    package var jacobianOrder = JacobianOrder.batch
    /// That order for `.sharedLatents` [B], and its sort keys [B].
    let jacobianTokens: Buffer<Int>, jacobianSortKeys: Buffer<UInt64>

    // MARK: Backward (docs/jsae-spec.md, "Gradients")
    public internal(set) var gradIn: SAETensors<T>
    public internal(set) var gradOut: SAETensors<T>
    /// dL/dx̂ (then dL/dŷ) [B, d].
    let residual: Buffer<T>
    /// The Jacobian term's gradient at wd1 and w2eᵀ.
    let dwd1: Buffer<T>, dw2eT: Buffer<T>
    /// The (token, slot) pairs sorted by latent, [B·k], and each latent's
    /// first entry in it, [max(m_in, m_out) + 1]: the sparse decode's, then
    /// the reconstruction backward's (each sorts its own SAE's codes).
    let latentPairs: Buffer<Int>, latentStarts: Buffer<Int>

    /// Per-block partial sums of the gradient norm; per-feature means (metrics).
    let partials: Buffer<Double>, featureMeans: Buffer<Double>

    /// Scratch shared by phases that are never live at once: a part of the
    /// encoder's pre-activations, one chunk of the MLP's hidden
    /// activations, the Jacobian pass's gathered blocks and their chunk's
    /// gradients, and the reconstruction backward's per-worker sums of
    /// encoder-gradient columns. Shared, it costs only the largest phase's
    /// need; the first three are sized to about the same (16–17 MiB at
    /// Pythia-70m in Float), so that shrinking any one alone would not
    /// shrink it.
    let arena: Buffer<T>

    public init(_ s: WorkspaceShape, purpose: WorkspacePurpose = [], threads: Int = Parallel.onlineCores) {
        precondition(s.tokens >= 0 && s.d >= 1 && s.mIn >= 1 && s.k >= 1 && s.jacobianChunk >= 1 && threads >= 1)
        BLASThreads.keepSerial()
        shape = s
        self.threads = threads
        let B = s.tokens, d = s.d, k = s.k, dMlp = s.pair ? s.dMlp : 0
        let mOut = s.pair ? s.mOut : 0
        let train = purpose.contains(.training)
        x = Buffer(B * d)
        codesIn = CodesBuffer(tokens: B, k: k); xHat = Buffer(B * d)
        phi = Buffer(B * dMlp); y = Buffer(s.pair ? B * d : 0)
        codesOut = CodesBuffer(tokens: s.pair ? B : 0, k: k); yHat = Buffer(s.pair ? B * d : 0)
        wd1 = Buffer(s.mIn * dMlp); w2eT = Buffer(mOut * dMlp)
        jacobianAbs = Buffer(s.pair ? B : 0); jacobianCounts = Buffer(s.pair ? 4 * B : 0)
        jacobian = Buffer(purpose.contains(.storeJacobian) && s.pair ? B * k * k : 0)
        jacobianTokens = Buffer(s.pair ? B : 0); jacobianSortKeys = Buffer(s.pair ? B : 0)
        gradIn = SAETensors(d: train ? d : 0, m: train ? s.mIn : 0)
        gradOut = SAETensors(d: train && s.pair ? d : 0, m: train && s.pair ? mOut : 0)
        residual = Buffer(train ? B * d : 0)
        dwd1 = Buffer(train ? s.mIn * dMlp : 0); dw2eT = Buffer(train ? mOut * dMlp : 0)
        let mMax = max(s.mIn, mOut)
        latentPairs = Buffer(B * k); latentStarts = Buffer(mMax + 1)
        partials = Buffer(train ? squaredSumBlocks(2 * d * mMax + mMax + d) : 0)
        featureMeans = Buffer(d)
        let encoderChunk = encodeScratchCount(tokens: B, m: mMax)
        let jac = s.pair ? JacobianScratch.count(tokens: B, k: k, dMlp: dMlp, chunk: s.jacobianChunk, threads: threads, backward: train,
                                                           kernel: T.hasJacobianKernel) : 0
        arena = Buffer(max(encoderChunk, mlpScratchCount(tokens: B, dMlp: dMlp), jac, train ? decoderBackwardScratchCount(m: mMax, d: d, threads: threads) : 0))
    }

    /// Copies a batch (and the output SAE's target, if given) into the cache.
    func load(_ xIn: Matrix<T>, yTarget target: Matrix<T>?) {
        precondition(xIn.cols == shape.d && xIn.rows <= shape.tokens,
                     "workspace: batch [\(xIn.rows), \(xIn.cols)] does not fit [\(shape.tokens), \(shape.d)]")
        tokens = xIn.rows
        xIn.data.withUnsafeBufferPointer { x.p.update(from: $0.baseAddress!, count: $0.count) }
        hasYTarget = target != nil
        if let target {
            precondition(target.rows == xIn.rows && target.cols == shape.d)
            target.data.withUnsafeBufferPointer { yTarget.p.update(from: $0.baseAddress!, count: $0.count) }
        }
    }

    /// The output SAE's input and target: the given y, else f(x).
    var outputTarget: UnsafeMutablePointer<T> { hasYTarget ? yTarget.p : y.p }
}

/// Zeroes `count` elements at `p` with one memset: every element type here
/// (Float, Double, the integers) has all-zero bytes for 0, and a generic
/// `initialize(repeating:)` or `[T](repeating: 0, count:)` reached from
/// another module's generic code (a Workspace or SAETensors made in
/// JSAERuns, a batch read by JSAEIO) runs unspecialised, a value-witness
/// call per element.
func zeroFill<E: Numeric & BitwiseCopyable>(_ p: UnsafeMutablePointer<E>, count: Int) {
    UnsafeMutableRawPointer(p).initializeMemory(as: UInt8.self, repeating: 0, count: count * MemoryLayout<E>.stride)
}

/// `max(count, 1)` elements, zeroed (`zeroFill`).
func allocateZeroed<E: Numeric & BitwiseCopyable>(_ count: Int) -> UnsafeMutablePointer<E> {
    let p: UnsafeMutablePointer<E> = allocateStorage(count)
    zeroFill(p, count: max(count, 1))
    return p
}

/// The size of a transparent huge page on x86-64 and of arm64's with 4 KiB
/// base pages, from which `allocateStorage` asks for them.
let hugePageBytes = 2 << 20

/// Uninitialised room for `max(count, 1)` elements, freed with
/// `deallocate()`. From `hugePageBytes` up, the block is aligned to it and
/// its whole huge pages are advised MADV_HUGEPAGE before the first touch:
/// the step reads and writes rows of its large matrices at random (the
/// Jacobian's rows of wd1 and w2eᵀ and of their gradients, 128 MiB each at
/// Pythia-70m, the decode's and its backward's token rows), and on 4 KiB
/// pages each such row costs TLB misses (docs/performance.md measures
/// both). The advice is only a hint: where transparent huge pages are off
/// or not built into the kernel, madvise fails and the block stays on base
/// pages with the same contents, so its result is not an error here.
func allocateStorage<E>(_ count: Int) -> UnsafeMutablePointer<E> {
    let bytes = max(count, 1) * MemoryLayout<E>.stride
    guard bytes >= hugePageBytes else { return .allocate(capacity: max(count, 1)) }
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: hugePageBytes)
    _ = madvise(raw, bytes / hugePageBytes * hugePageBytes, MADV_HUGEPAGE)
    return raw.bindMemory(to: E.self, capacity: max(count, 1))
}

extension Array where Element: Numeric & BitwiseCopyable {
    /// `count` zeros, by one memset (`zeroFill`).
    public init(zeros count: Int) {
        precondition(count >= 0)
        self.init(unsafeUninitializedCapacity: count) { buffer, initialised in
            if count > 0 { zeroFill(buffer.baseAddress!, count: count) }
            initialised = count
        }
    }
}

/// One raw allocation of `count` elements, zeroed, freed with its owner.
final class Buffer<E> {
    let p: UnsafeMutablePointer<E>
    let count: Int
    init(_ count: Int) where E: Numeric & BitwiseCopyable {
        self.count = count
        p = allocateZeroed(count)
    }
    /// A copy of the first `n` elements.
    func array(_ n: Int) -> [E] { Array(UnsafeBufferPointer(start: p, count: n)) }
    deinit { p.deallocate() }
}

/// TopK codes of up to B tokens: [B, k] indices (descending pre-activation),
/// raw pre-activations, and post-ReLU values.
final class CodesBuffer<T: JSAEScalar> {
    let tokens: Int, k: Int
    let indices: Buffer<Int>, preacts: Buffer<T>, values: Buffer<T>
    init(tokens: Int, k: Int) {
        self.tokens = tokens; self.k = k
        indices = Buffer(tokens * k); preacts = Buffer(tokens * k); values = Buffer(tokens * k)
    }
    /// The first `n` tokens' codes as a value.
    func codes(_ n: Int) -> SparseCodes<T> {
        var c = SparseCodes<T>(tokens: n, k: k)
        c.indices = indices.array(n * k); c.preacts = preacts.array(n * k); c.values = values.array(n * k)
        return c
    }
}

/// The shapes a workspace is sized from.
public struct WorkspaceShape: Sendable, Equatable {
    public var tokens, d, mIn, mOut, dMlp, k: Int
    /// Tokens per Jacobian chunk.
    public var jacobianChunk: Int
    /// A pair (output SAE and MLP present), not a single SAE.
    public var pair: Bool { mOut > 0 && dMlp > 0 }
    public init(tokens: Int, d: Int, mIn: Int, mOut: Int, dMlp: Int, k: Int, jacobianChunk: Int = defaultJacobianChunk) {
        self.tokens = tokens; self.d = d; self.mIn = mIn; self.mOut = mOut; self.dMlp = dMlp; self.k = k
        self.jacobianChunk = jacobianChunk
    }
}

/// What a workspace's buffers are for: `training` adds gradients and the Jacobian
/// term's backward; `storeJacobian` keeps every token's J.
public struct WorkspacePurpose: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let training = WorkspacePurpose(rawValue: 1)
    public static let storeJacobian = WorkspacePurpose(rawValue: 2)
}

