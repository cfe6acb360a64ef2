/// Every error the library throws. `description` is one line that names the
/// file (when there is one) and the problem, ready for a CLI to print.
public struct JSAEError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String?
    public var message: String

    public init(file: String? = nil, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String {
        if let file { return "\(file): \(message)" }
        return message
    }

    /// The same problem, now attributed to `file` (keeps an existing file name).
    public func inFile(_ file: String) -> JSAEError {
        self.file == nil ? JSAEError(file: file, message) : self
    }
}
