import Testing
import JSAECore
import _JSAETestSupport

@Suite("TopK and the SAE")
struct TopKAndSAETests {
    @Test("TopK equals the sort-based rule exhaustively on small rows with many ties")
    func topKExhaustive() {
        var g = SeededGenerator(seed: 11)
        for m in 1...8 {
            for k in 1...m {
                for _ in 0..<40 {
                    // Values from a set of five, so ties are frequent.
                    let h = (0..<m).map { _ in Double(Int.random(in: -2...2, using: &g)) }
                    var idx = [Int](repeating: -1, count: k), val = [Double](repeating: .nan, count: k)
                    h.withUnsafeBufferPointer { topKRow($0.baseAddress!, m: m, k: k, outIndices: &idx, outValues: &val) }
                    let want = naiveTopK(h, k: k)
                    #expect(idx == want, "m=\(m) k=\(k) h=\(h)")
                    #expect(val == want.map { h[$0] })
                }
            }
        }
    }

    @Test("Tie rule: lower index first and lower index wins the last place")
    func tieRule() {
        let h: [Double] = [1, 3, 2, 3, 2, 0]
        var idx = [Int](repeating: 0, count: 3), val = [Double](repeating: 0, count: 3)
        h.withUnsafeBufferPointer { topKRow($0.baseAddress!, m: 6, k: 3, outIndices: &idx, outValues: &val) }
        #expect(idx == [1, 3, 2])
    }

    @Test("ReLU after selection: a selected negative pre-activation gives value 0, so L0 <= k")
    func reluAfterSelection() throws {
        let sae = try TopKSAE<Double>(wEnc: Matrix(rows: 1, cols: 3, data: [1, -1, -2]), bEnc: [0, 0, 0],
                                      wDec: Matrix(rows: 3, cols: 1, data: [1, 1, 1]), bDec: [0], k: 3)
        let codes = sae.encode(Matrix(rows: 1, cols: 1, data: [2]))
        #expect(codes.indices == [0, 1, 2])
        #expect(codes.preacts == [2, -2, -4])
        #expect(codes.values == [2, 0, 0])
    }

    @Test("Sparse decode equals the dense product s @ W_dec + b_dec", arguments: PairShape.sweep)
    func sparseDecode(_ s: PairShape) {
        let (model, x) = randomModel(s, seed: 5)
        let sae = model.saeIn
        let codes = sae.encode(x)
        var dense = Matrix<Double>(rows: x.rows, cols: sae.m)
        for b in 0..<x.rows { for j in 0..<s.k { dense[b, codes.indices[b * s.k + j]] = codes.values[b * s.k + j] } }
        var want = matmul(dense, sae.wDec)
        addRowBias(&want, sae.bDec)
        // Same products summed in another order: a few ulps at O(1) magnitudes.
        #expect(allClose(sae.decode(codes).data, want.data, rtol: 1e-12, atol: 1e-12))
    }

    @Test("BLAS encoder and TopK agree with plain loops", arguments: PairShape.sweep)
    func encoderMatchesLoops(_ s: PairShape) {
        let (model, x) = randomModel(s, seed: 6)
        let codes = model.saeIn.encode(x)
        for b in 0..<x.rows {
            let h = naivePreacts(x.row(b), model.saeIn)
            #expect(Array(codes.indices(ofToken: b)) == naiveTopK(h, k: s.k))
        }
    }

    @Test("Bad shapes and k are rejected with a clear message")
    func validation() {
        let w = Matrix<Double>(rows: 2, cols: 3)
        #expect(throws: JSAEError("k = 4 exceeds the number of latents m = 3")) {
            try TopKSAE(wEnc: w, bEnc: [0, 0, 0], wDec: Matrix(rows: 3, cols: 2), bDec: [0, 0], k: 4)
        }
        #expect(throws: JSAEError("k = 0 must be at least 1")) {
            try TopKSAE(wEnc: w, bEnc: [0, 0, 0], wDec: Matrix(rows: 3, cols: 2), bDec: [0, 0], k: 0)
        }
        #expect(throws: JSAEError("W_dec has shape [2, 3], expected [3, 2] (from W_enc [2, 3])")) {
            try TopKSAE(wEnc: w, bEnc: [0, 0, 0], wDec: Matrix(rows: 2, cols: 3), bDec: [0, 0], k: 1)
        }
    }
}

@Suite("GELU")
struct GELUTests {
    // Values from torch.nn.functional.gelu (float64), approximate='none' / 'tanh'.
    static let z: [Double] = [-3, -1, 0.5, 1, 2.5]
    static let exact: [Double] = [-0.00404969409489031, -0.15865525393145702, 0.34573123063700656, 0.841344746068543, 2.4844758366855597]
    static let tanh: [Double] = [-0.0036373920817729943, -0.15880800939172324, 0.34571400982514394, 0.8411919906082768, 2.484915733910001]

    @Test("Values match PyTorch for both forms")
    func values() {
        // libm erf/tanh vs PyTorch's: agree to a few ulps.
        #expect(allClose(Self.z.map { Activation.gelu.value($0) }, Self.exact, rtol: 1e-14, atol: 1e-15))
        #expect(allClose(Self.z.map { Activation.geluTanh.value($0) }, Self.tanh, rtol: 1e-14, atol: 1e-15))
    }

    @Test("Derivatives match central differences", arguments: Activation.allCases)
    func derivative(_ a: Activation) {
        // ε = 1e-5: truncation ε²/6·|gelu'''| ≲ 1e-10, rounding ~1e-16/ε ≈ 1e-11.
        let eps = 1e-5
        let zs = stride(from: -6.0, through: 6.0, by: 0.37).map { $0 }
        let fd = zs.map { (a.value($0 + eps) - a.value($0 - eps)) / (2 * eps) }
        #expect(allClose(zs.map { a.derivative($0) }, fd, rtol: 1e-8, atol: 1e-9))
    }

    /// The MLP's loop uses the fused call; value and derivative, which the
    /// tests above hold against PyTorch and central differences, are the
    /// definition it must equal bit for bit, in both precisions.
    @Test("valueAndDerivative is value and derivative, bit for bit", arguments: Activation.allCases)
    func fused(_ a: Activation) {
        func sameBits<T>(_ x: T, _ y: T) -> Bool {
            withUnsafeBytes(of: x) { px in withUnsafeBytes(of: y) { py in px.elementsEqual(py) } }
        }
        func check<T: JSAEScalar>(_ zs: [T]) {
            for z in zs {
                let (v, d) = a.valueAndDerivative(z)
                #expect(sameBits(v, a.value(z)) && sameBits(d, a.derivative(z)), "z = \(z)")
            }
        }
        let zs = stride(from: -9.0, through: 9.0, by: 0.0137).map { $0 } + [0, -0.0, 1e-30, -1e-30, 40, -40]
        check(zs)
        check(zs.map { Float($0) })
    }

    @Test("The two forms are different functions (so the tests can tell them apart)")
    func formsDiffer() {
        #expect(abs(Activation.gelu.derivative(1.5) - Activation.geluTanh.derivative(1.5)) > 1e-4)
    }
}

/// The one-by-one scan topKRow used before its blocked fast path, kept here
/// as the definition the blocked scan must equal exactly.
func scalarTopK<T: JSAEScalar>(_ h: [T], k: Int) -> (indices: [Int], values: [T]) {
    var idx = [Int](repeating: -1, count: k), val = [T](repeating: 0, count: k)
    var filled = 0
    for j in 0..<h.count {
        let v = h[j]
        if filled == k {
            if !(v > val[k - 1]) { continue }
            filled -= 1
        }
        var pos = filled
        while pos > 0 && val[pos - 1] < v { val[pos] = val[pos - 1]; idx[pos] = idx[pos - 1]; pos -= 1 }
        val[pos] = v; idx[pos] = j; filled += 1
    }
    return (idx, val)
}

@Suite("Blocked TopK")
struct BlockedTopKTests {
    /// Rows longer than a block, tails of every length, ties, NaN and
    /// infinities: the blocked scan's indices and values equal the plain
    /// scan's (bit for bit; NaN compared by position).
    @Test("equals the one-by-one scan", arguments: [false, true])
    func equalsScalar(_ ties: Bool) {
        var g = SeededGenerator(seed: ties ? 3 : 4)
        for m in [9, 15, 16, 17, 63, 100, 1000] {
            for k in [1, 2, 5, 8, 31, 32, m].filter({ $0 <= m }) {
                for trial in 0..<6 {
                    var h = (0..<m).map { _ in ties ? Float(Int.random(in: -3...3, using: &g)) : Float(g.normal()) }
                    if trial >= 4 {
                        for _ in 0..<3 { h[Int.random(in: 0..<m, using: &g)] = [Float.nan, .infinity, -.infinity][Int.random(in: 0...2, using: &g)] }
                    }
                    var idx = [Int](repeating: -1, count: k), val = [Float](repeating: 0, count: k)
                    h.withUnsafeBufferPointer { topKRow($0.baseAddress!, m: m, k: k, outIndices: &idx, outValues: &val) }
                    let want = scalarTopK(h, k: k)
                    #expect(idx == want.indices, "m=\(m) k=\(k) trial \(trial)")
                    #expect(val.map(\.bitPattern) == want.values.map(\.bitPattern), "m=\(m) k=\(k) trial \(trial)")
                    let hd = h.map(Double.init)
                    var idxD = [Int](repeating: -1, count: k), valD = [Double](repeating: 0, count: k)
                    hd.withUnsafeBufferPointer { topKRow($0.baseAddress!, m: m, k: k, outIndices: &idxD, outValues: &valD) }
                    #expect(idxD == scalarTopK(hd, k: k).indices, "Double m=\(m) k=\(k) trial \(trial)")
                }
            }
        }
    }
}

@Suite("TopK over parts of a row")
struct TopKPartsTests {
    /// The encoder selects a row part by part; cut at random points (parts
    /// shorter than k, than a vector block, empty ones), with ties, NaN and
    /// infinities, the indices and values equal the one-by-one scan's.
    @Test("scanning a row's parts in order equals scanning the row")
    func partsEqualWhole() {
        var g = SeededGenerator(seed: 23)
        for m in [1, 7, 40, 300] {
            for k in [1, 3, 8, 33].filter({ $0 <= m }) {
                for trial in 0..<8 {
                    var h = (0..<m).map { _ in trial % 2 == 0 ? Float(Int.random(in: -3...3, using: &g)) : Float(g.normal()) }
                    if trial >= 6 {
                        for _ in 0..<3 { h[Int.random(in: 0..<m, using: &g)] = [Float.nan, .infinity, -.infinity][Int.random(in: 0...2, using: &g)] }
                    }
                    var cuts = [0, m] + (0..<3).map { _ in Int.random(in: 0...m, using: &g) }
                    cuts.sort()
                    var idx = [Int](repeating: -1, count: k), val = [Float](repeating: 0, count: k)
                    h.withUnsafeBufferPointer { p in
                        for (a, b) in zip(cuts, cuts.dropFirst()) {
                            topKRow(p.baseAddress! + a, count: b - a, firstIndex: a, k: k, outIndices: &idx, outValues: &val)
                        }
                    }
                    let want = scalarTopK(h, k: k)
                    #expect(idx == want.indices, "m=\(m) k=\(k) cuts \(cuts)")
                    #expect(val.map(\.bitPattern) == want.values.map(\.bitPattern), "m=\(m) k=\(k) cuts \(cuts)")
                }
            }
        }
    }
}

@Suite("TopK floor")
struct TopKFloorTests {
    /// Parts long enough for the floor (at least 64 entries per block of
    /// k), in Float: the Pythia-70m cut (two parts of 8192, k 32), parts
    /// after one that held fewer than k, ties at the floor itself (values
    /// from a few levels, so every block's maximum is the top level),
    /// -0 beside +0, a NaN after the blocks, an infinity inside them, a
    /// part of -infinity: the indices and values equal the one-by-one scan's.
    @Test("skips nothing the one-by-one scan would keep")
    func equalsScan() {
        var g = SeededGenerator(seed: 41)
        let cases: [(m: Int, k: Int, cuts: [Int])] = [(16384, 32, [0, 8192, 16384]), (4096, 32, [0, 10, 4096]),
                                                      (2100, 8, [0, 2100]), (700, 3, [0, 1, 350, 700])]
        for c in cases {
            for trial in 0..<7 {
                var h: [Float]
                switch trial {
                case 0: h = (0..<c.m).map { _ in Float(g.normal()) }
                case 1, 2: h = (0..<c.m).map { _ in Float(Int.random(in: -3...3, using: &g)) }
                case 3: h = (0..<c.m).map { _ in Bool.random(using: &g) ? 0.0 : -0.0 }
                case 4: h = (0..<c.m).map { _ in Float(g.normal()) }; h[c.m - 1] = .nan
                case 5: h = (0..<c.m).map { _ in Float(g.normal()) }; h[c.m / 3] = .infinity
                default: h = [Float](repeating: -.infinity, count: c.m); h[c.m / 2] = 1
                }
                if trial == 2 { h[c.m / 2] = 3; h[c.m - 1] = 3 }
                var idx = [Int](repeating: -1, count: c.k), val = [Float](repeating: 0, count: c.k)
                h.withUnsafeBufferPointer { p in
                    for (a, b) in zip(c.cuts, c.cuts.dropFirst()) {
                        topKRow(p.baseAddress! + a, count: b - a, firstIndex: a, k: c.k, outIndices: &idx, outValues: &val)
                    }
                }
                let want = scalarTopK(h, k: c.k)
                #expect(idx == want.indices, "m=\(c.m) k=\(c.k) trial \(trial)")
                #expect(val.map(\.bitPattern) == want.values.map(\.bitPattern), "m=\(c.m) k=\(c.k) trial \(trial)")
            }
        }
    }

    /// The floor itself, against its definition: the least of the k blocks'
    /// maxima, nil with a NaN anywhere or an infinity in the blocks.
    @Test("is the least of the blocks' maxima, or nil")
    func floorValue() {
        var g = SeededGenerator(seed: 42)
        let m = 1000, blocks = 7, length = m / (8 * blocks) * 8
        let h = (0..<m).map { _ in Float(g.normal()) }
        let want = (0..<blocks).map { b in h[(b * length)..<((b + 1) * length)].max()! }.min()!
        #expect(h.withUnsafeBufferPointer { Float.minOfBlockMaxima($0.baseAddress!, count: m, blocks: blocks) } == want)
        for (i, v) in [(m - 1, Float.nan), (3, .nan), (3, .infinity), (length * blocks - 1, -.infinity)] {
            var bad = h
            bad[i] = v
            let got = bad.withUnsafeBufferPointer { Float.minOfBlockMaxima($0.baseAddress!, count: m, blocks: blocks) }
            #expect(got == nil, "\(v) at \(i): \(String(describing: got))")
        }
        // Double takes no floor (its rows are scanned plainly).
        let hd = h.map(Double.init)
        #expect(hd.withUnsafeBufferPointer { Double.minOfBlockMaxima($0.baseAddress!, count: m, blocks: blocks) } == nil)
    }
}

@Suite("Finiteness scan")
struct FinitenessScanTests {
    /// The first NaN or ±Inf by (row, col), found by a plain walk here, for
    /// every position in a 7 × 13 matrix, in Float and Double; a finite
    /// matrix (with ±0, subnormals and the largest finite values) has none.
    func check<T: JSAEScalar>(_: T.Type) {
        var g = SeededGenerator(seed: 11)
        let base = Matrix<T>(rows: 7, cols: 13, data: g.normals(91).map { T($0) })
        #expect(base.firstNonFinite == nil && base.allFinite)
        var edge = base
        edge.data[0] = -0.0; edge.data[1] = T.leastNonzeroMagnitude; edge.data[2] = -T.greatestFiniteMagnitude
        #expect(edge.firstNonFinite == nil)
        for bad in [T.nan, T.infinity, -T.infinity] {
            for i in 0..<91 {
                var m = base
                m.data[i] = bad
                if i + 5 < 91 { m.data[i + 5] = T.nan }   // a later one must not be the answer
                let found = m.firstNonFinite
                #expect(found?.row == i / 13 && found?.col == i % 13, "\(bad) at \(i)")
                #expect(!m.allFinite)
            }
        }
        #expect(Matrix<T>(rows: 0, cols: 5).firstNonFinite == nil)
    }

    @Test("finds the first NaN or Inf by row and column, in Float and Double")
    func firstNonFinite() {
        check(Float.self)
        check(Double.self)
    }
}

@Suite("Zeroed storage")
struct ZeroedStorageTests {
    /// `[T](zeros:)` and `Matrix(rows:cols:)` fill by memset; each entry must
    /// be +0 (bit pattern 0), and a Matrix of any other value, -0 included,
    /// must hold that value's bits; `firstNonFiniteIndex` must agree with a
    /// plain walk.
    func check<T: JSAEScalar>(_: T.Type) {
        for n in [0, 1, 7, 1000] {
            let z = [T](zeros: n)
            #expect(z.count == n && z.allSatisfy { $0.sign == .plus && $0 == 0 }, "n=\(n)")
            #expect(z.firstNonFiniteIndex == nil)
        }
        #expect(Matrix<T>(rows: 3, cols: 5).data.allSatisfy { $0.sign == .plus && $0 == 0 })
        #expect(Matrix<T>(rows: 0, cols: 5).count == 0)
        for v: T in [-0.0, 1.5, -T.greatestFiniteMagnitude] {
            let m = Matrix<T>(rows: 2, cols: 3, repeating: v)
            #expect(m.data.count == 6 && m.data.allSatisfy { $0 == v && $0.sign == v.sign }, "\(v)")
        }
        var a = [T](zeros: 50)
        a[17] = .nan; a[30] = .infinity
        #expect(a.firstNonFiniteIndex == 17)
        a[17] = 0
        #expect(a.firstNonFiniteIndex == 30)
    }

    /// A copy of SAETensors is its own: the first write to it copies the
    /// shared values (every one, bit for bit) and leaves the original as it was.
    @Test("SAETensors copies on write, every value")
    func copyOnWrite() {
        var g = SeededGenerator(seed: 31)
        var a = SAETensors<Float>(d: 3, m: 5)
        let values = (0..<a.count).map { _ in Float(g.normal()) }
        for name in SAETensors<Float>.Name.allCases { a[name] = Array(values[a.range(name)]) }
        var b = a
        var bDec = b[.bDec]
        bDec[0] += 1
        b[.bDec] = bDec
        #expect(a.withFlatValues { Array($0) }.map(\.bitPattern) == values.map(\.bitPattern))
        var want = values
        want[a.range(.bDec).lowerBound] += 1
        #expect(b.withFlatValues { Array($0) }.map(\.bitPattern) == want.map(\.bitPattern))
    }

    @Test("zeros are +0 in Float and Double, other fills keep their bits")
    func zeros() {
        check(Float.self)
        check(Double.self)
    }
}
