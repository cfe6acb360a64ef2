import Dispatch
import Foundation

/// SIGINT and SIGTERM, caught for as long as this object lives: the first
/// one is kept, and a training loop reads `stopped` between steps, writes a
/// checkpoint and ends; the command then exits with 128 + `signal`.
/// `jsae train` and `jsae reproduce` both stop through one of these.
final class StopOnSignals: @unchecked Sendable {
    // @unchecked: `received` is guarded by `lock`; `sources` is set in init only.
    private let lock = NSLock()
    private var received: Int32 = 0
    private var sources: [DispatchSourceSignal] = []

    init() {
        sources = [SIGINT, SIGTERM].map { sig in
            ignoreByDefault(sig)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { [weak self] in self?.set(sig) }
            src.resume()
            return src
        }
    }

    deinit { sources.forEach { $0.cancel() } }

    private func set(_ s: Int32) { lock.withLock { if received == 0 { received = s } } }

    /// The signal's default action (ending the process) is switched off, so
    /// that only the dispatch source sees it.
    private func ignoreByDefault(_ sig: Int32) { _ = Glibc.signal(sig, SIG_IGN) }

    /// The first signal received, 0 before any.
    var signal: Int32 { lock.withLock { received } }
    var stopped: Bool { signal != 0 }
}
