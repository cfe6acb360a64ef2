import JSAECore

/// What one phase of a step must do at least: its FLOPs and the bytes it must
/// move to and from memory. Its limit is the longer of the FLOPs at the
/// in-run sgemm ceiling and the bytes at the in-run (triad) bandwidth: a
/// roofline lower bound, not a forecast.
struct PhaseCost: Codable {
    var flops: Double
    var bytes: Double
    /// For the per-token Jacobian phases: the bytes the per-token kernel moves
    /// as it is written (every token gathers its own rows, every token's
    /// gradient rows are scattered with a read and a write), against the
    /// roofline's count of each row once. Their time at the bandwidth is the
    /// floor of that formulation; the gap between the two floors is what a
    /// token order that shares rows in cache could win.
    var perTokenBytes: Double? = nil
    /// For the phases that read rows at random positions (the sparse decode
    /// and its backward, the Jacobian's gathers and scatter): the bytes of
    /// those rows as the phase's code reads them, by the shape of the matrix
    /// they come from. Their time at the in-run gather rate for that shape
    /// (`GatherRate`) is the floor of the phase as written: rows cannot be
    /// read at random faster than that, whatever the arithmetic around them.
    var gathered: [GatheredRows] = []

    static let zero = PhaseCost(flops: 0, bytes: 0)
    static func + (a: PhaseCost, b: PhaseCost) -> PhaseCost { PhaseCost(flops: a.flops + b.flops, bytes: a.bytes + b.bytes) }
    static func * (n: Double, c: PhaseCost) -> PhaseCost {
        PhaseCost(flops: n * c.flops, bytes: n * c.bytes, perTokenBytes: c.perTokenBytes.map { n * $0 },
                  gathered: c.gathered.map { GatheredRows(bytes: n * $0.bytes, from: $0.from) })
    }

    /// The gathered rows' time at the measured rates, nil when a rate for
    /// one of their shapes was not measured or the phase gathers nothing.
    func gatherSeconds(_ bandwidth: Bandwidth) -> Double? {
        guard !gathered.isEmpty else { return nil }
        var t = 0.0
        for g in gathered {
            guard let gbs = bandwidth.gatherGBs(g.from) else { return nil }
            t += g.bytes / (gbs * 1e9)
        }
        return t
    }

    func flopSeconds(ceilingGFLOPs: Double) -> Double { flops / (ceilingGFLOPs * 1e9) }
    func byteSeconds(bandwidthGBs: Double) -> Double { bytes / (bandwidthGBs * 1e9) }
    func limitSeconds(ceilingGFLOPs: Double, bandwidthGBs: Double) -> Double {
        max(flopSeconds(ceilingGFLOPs: ceilingGFLOPs), byteSeconds(bandwidthGBs: bandwidthGBs))
    }
    /// "flops" when the FLOPs take longer than the bytes, else "bytes".
    func bound(ceilingGFLOPs: Double, bandwidthGBs: Double) -> String {
        flopSeconds(ceilingGFLOPs: ceilingGFLOPs) >= byteSeconds(bandwidthGBs: bandwidthGBs) ? "flops" : "bytes"
    }
}

extension Shape {
    /// Each phase's FLOPs and bytes for one step of a single SAE (`pair`
    /// false) or a JSAE pair, in Float, from B (batch), d, m, k and h (d_mlp).
    ///
    /// How they are counted:
    /// - FLOPs: 2 per multiply-add of the phase's products, the spec's count
    ///   where the spec counts the phase (encoders, MLP, wd1/w2e, J, dW), and
    ///   the same rule for the sparse decode and its backward. Element-wise
    ///   work (bias, GELU, TopK's comparisons, Adam) is not counted as FLOPs:
    ///   it is bounded by its bytes.
    /// - Bytes: the phase's inputs read once and its outputs written once
    ///   (read and written when it accumulates into them), 4 per Float and 8
    ///   per Int index, each write counted once as STREAM counts it. The
    ///   phase's own scratch (the MLP's activations, the residual, the
    ///   transposed encoder gradient, J's gathered blocks) and re-reads of
    ///   gathered rows are not counted, since a blocked or latent-sorted
    ///   kernel avoids them. The dense pre-activations [B, m] are counted,
    ///   written by the encoder and read by TopK, because the step passes
    ///   them between those two phases today (through a 512-token chunk
    ///   buffer: when that chunk fits in L3, as at the ci preset, the two
    ///   phases can beat their DRAM limit).
    /// So a phase at 1× its limit could not go faster by this count; the
    /// multiple says how far it is from that, not how far it could get.
    func phaseCosts(pair: Bool) -> [Phase: PhaseCost] {
        let B = Double(batch), d = Double(d), m = Double(m), k = Double(k), h = Double(dMlp)
        let F = 4.0, I = 8.0
        let n = pair ? 2.0 : 1.0   // SAEs
        // Codes per SAE: indices (Int), pre-activations and values (Float), [B, k] each.
        let codes = B * k * (I + 2 * F)
        let params = 2 * m * d + m + d   // one SAE's W_enc, b_enc, W_dec, b_dec
        var c: [Phase: PhaseCost] = [:]
        // h = x·W_enc + b_enc per SAE: reads x (or y) [B, d], W_enc, b_enc; writes h [B, m].
        c[.encoderGemm] = n * PhaseCost(flops: 2 * B * d * m, bytes: F * (B * d + d * m + m + B * m))
        // TopK per SAE: reads h [B, m]; writes the codes.
        c[.topK] = n * PhaseCost(flops: 0, bytes: F * B * m + codes)
        // Per SAE: x̂ = b_dec + Σ s·W_dec[K] (2·B·k·d FLOPs), then the
        // reconstruction backward: a dot and two axpys per (token, latent)
        // (6·B·k·d). Reads W_dec, the target [B, d] and the codes; writes x̂
        // [B, d]; accumulates into dW_dec and dW_enc (read + write each) and
        // the two bias gradients.
        // Gathered: both visit the pairs latent by latent, streaming W_dec's
        // rows in order; the decode adds into a row of x̂ per pair (read and
        // written, counted as one gathered row), the backward reads a row
        // of dL/dx̂ and one of the input per pair, all from [B, d] matrices.
        c[.sparseDecoder] = n * PhaseCost(flops: 8 * B * k * d,
                                          bytes: F * (m * d + 2 * B * d + 4 * m * d + 2 * (m + d)) + codes,
                                          gathered: [GatheredRows(bytes: F * 3 * B * k * d, from: .init(rows: Int(B), rowFloats: Int(d)))])
        // Normalise W_dec's rows (read + write W_dec), read every gradient
        // once for the global clipping norm, then Adam: reads the gradient,
        // reads and writes the parameters and both moments (7 per parameter).
        // The clip's rescale runs only when the norm exceeds the clip: not counted.
        c[.optimizer] = n * PhaseCost(flops: 0, bytes: F * (2 * m * d + 8 * params))
        // Explained variance (target and reconstruction [B, d]) and L0 (values).
        c[.metrics] = n * PhaseCost(flops: 0, bytes: F * (2 * B * d + B * k))
        guard pair else { return c }
        // f(x) = GELU(x·W_in + b_in)·W_out + b_out (4·B·d·h FLOPs): reads x,
        // W_in, W_out and the biases; writes φ' [B, h] and y [B, d].
        c[.mlp] = PhaseCost(flops: 4 * B * d * h, bytes: F * (B * d + 2 * d * h + h + d + B * h + B * d))
        // wd1 = W_dec_x·W_in and w2eᵀ = (W_out·W_enc_y)ᵀ, [m, h] each (4·m·d·h):
        // reads the four weights, writes both factors.
        c[.precompute] = PhaseCost(flops: 4 * m * d * h, bytes: F * (2 * m * d + 2 * d * h + 2 * m * h))
        // J = w2eᵀ[K2]·(wd1[K1] ⊙ φ')ᵀ per token (2·B·k²·h): reads the rows of
        // wd1 and w2eᵀ the batch selects (at most min(m, B·k) of each), φ'
        // and both index sets; writes per-token |J| sums and counts (8 + 16 bytes).
        let rows = min(m, B * k)
        c[.jacobianForward] = PhaseCost(flops: 2 * B * k * k * h, bytes: F * (2 * rows * h + B * h) + 2 * B * k * I + 24 * B,
                                        perTokenBytes: F * (2 * B * k * h + B * h) + 2 * B * k * I + 24 * B,
                                        gathered: [GatheredRows(bytes: F * 2 * B * k * h, from: .init(rows: 2 * Int(m), rowFloats: Int(h)))])
        // G·R and Gᵀ·L per token (4·B·k²·h), scattered into dwd1 and dw2eᵀ
        // [m, h] each, written once (their inputs were counted by the forward,
        // with which the backward is fused).
        // Gathered: the scatter reads each token's 2k gradient rows before
        // writing them back (the writes are not counted there).
        c[.jacobianBackward] = PhaseCost(flops: 4 * B * k * k * h, bytes: F * 2 * m * h, perTokenBytes: F * 2 * 2 * B * k * h,
                                         gathered: [GatheredRows(bytes: F * 2 * B * k * h, from: .init(rows: 2 * Int(m), rowFloats: Int(h)))])
        // dW_dec_x += dwd1·W_inᵀ, dW_enc_y += W_outᵀ·dw2e (4·m·d·h): reads
        // dwd1, dw2eᵀ, W_in, W_out; accumulates into both [m, d] gradients.
        c[.weightGradients] = PhaseCost(flops: 4 * m * d * h, bytes: F * (2 * m * h + 2 * d * h + 4 * m * d))
        return c
    }
}

/// Bytes of rows a phase reads at random positions, and the shape of the
/// matrix it reads them from.
struct GatheredRows: Codable {
    var bytes: Double
    var from: MatrixShape
}

/// A matrix's rows and row width in floats.
struct MatrixShape: Codable, Equatable {
    var rows: Int, rowFloats: Int
}

/// One phase's limit as reported (table and JSON).
struct PhaseLimit: Codable {
    var flops: Double
    var bytes: Double
    var limitMs: Double
    var bound: String
    var ms: Double
    /// ms / limitMs: 1 is at the limit, 4 is four times slower than it.
    var overLimit: Double?
    /// The per-token formulation's bytes (`PhaseCost.perTokenBytes`) at the
    /// bandwidth, in ms, for the Jacobian phases.
    var perTokenByteMs: Double? = nil
    /// The phase's gathered rows (`PhaseCost.gathered`) at the in-run
    /// gather rates for their shapes, in ms.
    var gatherMs: Double? = nil
}
