extension Duration {
    /// Whole milliseconds (truncated), for logs and recorded durations.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Milliseconds with a tenth, for per-step timings in debug logs ("12.3").
    public var millisecondsText: String {
        let tenths = components.seconds * 10_000 + components.attoseconds / 100_000_000_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
