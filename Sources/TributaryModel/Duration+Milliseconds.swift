extension Duration {
    /// Whole milliseconds (truncated), for logs and recorded durations.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
