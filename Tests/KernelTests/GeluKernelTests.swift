import Testing
import CJSAEKernels
#if canImport(Glibc)
import Glibc
#endif

// The vectorised GELU (`jsae_gelu_f32`) against the exact GELU in Double.

private let u = Double(Float.ulpOfOne) / 2  // unit roundoff of Float, 2⁻²⁴
private let geluPaths: [jsae_kernel_path] = [JSAE_KERNEL_PORTABLE, JSAE_KERNEL_AVX2, JSAE_KERNEL_AVX512]
    .filter { jsae_kernel_path_supported($0) != 0 }

/// Every Float step of 2⁻¹² from -20 to 20, the neighbours of the two
/// branch points of erf (|z/√2| = 0.927734375) and of exp's clamp (z²/2 =
/// 87), and a few magnitudes far out, both signs; 163,850 inputs.
private let inputs: [Float] = {
    var v = (-81_920...81_920).map { Float($0) / 4096 }
    for centre in [Float(0.927734375 * 2.0.squareRoot()), Float((2.0 * 87).squareRoot())] {
        var a = centre, b = centre
        for _ in 0..<64 { v += [a, -a, b, -b]; a = a.nextUp; b = b.nextDown }
    }
    v += [1e-30, 1e-6, 30, 1e4, 1e20, .leastNonzeroMagnitude, .leastNormalMagnitude].flatMap { [$0, -$0] }
    return v
}()

private func run(_ z: [Float], path: jsae_kernel_path, derivative: Bool) -> (value: [Float], derivative: [Float]) {
    var v = z, d = [Float](repeating: .nan, count: z.count)
    if derivative { jsae_gelu_f32(&v, &d, Int64(z.count), path) } else { jsae_gelu_f32(&v, nil, Int64(z.count), path) }
    return (v, d)
}

/// Bounds, from the rounding of each step (the erf and exp polynomials are
/// within 1 ulp, ≤ 2u relative, over this range: checked offline against
/// Double on 2M points; here the composite is checked):
/// - value 0.5·z·(1 + e): z/√2 rounds (moving erf by ≤ 0.5u, as
///   |x·erf'(x)| ≤ 0.43), erf ≤ 2u, 1 + e rounds (≤ 2u, as |1 + e| ≤ 2),
///   the product rounds: |error| ≤ 0.5|z|·4.5u + u·|value| ≤ 4u·|z|;
/// - derivative Φ + z·φ: Φ = 0.5(1 + e) as above (≤ 2.25u); the argument
///   -z²/2 rounds twice (relative 2u, so φ moves by ≤ 2u·z²/2 relative), exp
///   ≤ 2u, the products and the sum round: |error| ≤ 2.25u +
///   |z·φ|·(z² + 8)·u + u·|derivative|, plus 1e-37 where e^{-z²/2} is below
///   Float's normal range and the kernel gives 0.
@Test func geluWithinItsRoundingBound() {
    for path in geluPaths {
        let both = run(inputs, path: path, derivative: true)
        let valueOnly = run(inputs, path: path, derivative: false)
        var bad = 0, worst = 0.0, worstAt: Float = 0
        for (i, zf) in inputs.enumerated() {
            let z = Double(zf)
            let e = erf(z / 2.0.squareRoot()), pdf = exp(-0.5 * z * z) / (2 * Double.pi).squareRoot()
            let value = 0.5 * z * (1 + e), derivative = 0.5 * (1 + e) + z * pdf
            let tolV = 4 * u * abs(z) + Double(Float.leastNonzeroMagnitude)
            let tolD = 2.25 * u + abs(z * pdf) * (z * z + 8) * u + u * abs(derivative) + 1e-37
            let errV = abs(Double(both.value[i]) - value), errD = abs(Double(both.derivative[i]) - derivative)
            if !(errV <= tolV) || !(errD <= tolD) { bad += 1 }
            let w = max(errV / tolV, errD / tolD)
            if w > worst { worst = w; worstAt = zf }
            // Without the derivative the value is the same.
            if valueOnly.value[i].bitPattern != both.value[i].bitPattern { bad += 1 }
        }
        #expect(bad == 0, "\(String(cString: jsae_kernel_path_name(path))): \(bad) entries outside their bound, worst \(worst)× its bound at z = \(worstAt)")
    }
}

/// The paths give the same bits (every rounding is spelled out), on the
/// inputs above and on special values; NaN in gives NaN out, and the
/// infinities give what the formula gives in IEEE arithmetic (erf(±∞) = ±1:
/// gelu(+∞) = +∞, gelu(-∞) = -∞·0 = NaN, and both derivatives ∞·0 = NaN).
@Test func geluPathsAgreeAndSpecialValues() {
    let special: [Float] = [0, -0, .infinity, -.infinity, .nan, -.nan, .greatestFiniteMagnitude, -.greatestFiniteMagnitude]
    let all = inputs + special
    let reference = run(all, path: JSAE_KERNEL_PORTABLE, derivative: true)
    for path in geluPaths {
        let o = run(all, path: path, derivative: true)
        #expect(o.value.map(\.bitPattern) == reference.value.map(\.bitPattern), "\(String(cString: jsae_kernel_path_name(path))) value")
        #expect(o.derivative.map(\.bitPattern) == reference.derivative.map(\.bitPattern), "\(String(cString: jsae_kernel_path_name(path))) derivative")
    }
    let s = run(special, path: JSAE_KERNEL_AUTO, derivative: true)
    #expect(s.value[0] == 0 && s.value[1] == 0 && s.derivative[0] == 0.5 && s.derivative[1] == 0.5)
    #expect(s.value[2] == .infinity && s.value[3].isNaN && s.derivative[2].isNaN && s.derivative[3].isNaN)
    #expect(s.value[4].isNaN && s.value[5].isNaN && s.derivative[4].isNaN && s.derivative[5].isNaN)
    #expect(s.value[6] == .greatestFiniteMagnitude && s.value[7] == 0 && s.derivative[6] == 1)
    // An empty call touches nothing.
    var one: [Float] = [3]
    jsae_gelu_f32(&one, nil, 0, JSAE_KERNEL_AUTO)
    #expect(one == [3])
}
