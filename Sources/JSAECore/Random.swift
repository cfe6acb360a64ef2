#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64: a small, fast, seeded generator. Every random draw in the
/// package (initialisation, shuffling, synthetic data) goes through it, so a
/// run is a pure function of its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    /// A standard normal draw (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return (-2 * Glibc.log(u1)).squareRoot() * Glibc.cos(2 * Double.pi * u2)
    }
    /// A generator for stream `index` of this seed (e.g. one per refill), so
    /// any stream can be regenerated without replaying the ones before it.
    public static func stream(seed: UInt64, index: UInt64) -> SeededGenerator {
        var g = SeededGenerator(seed: seed ^ 0xD1B54A32D192ED03)
        for _ in 0..<2 { _ = g.next() }
        return SeededGenerator(seed: g.next() &+ index &* 0x9E3779B97F4A7C15)
    }
}
