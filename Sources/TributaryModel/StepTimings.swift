/// The time each step of a batch took, for the per-step timings the stages and the writer log at debug level
/// ("load nodes 12.3 ms, seen times 4.0 ms").
package struct StepTimings: CustomStringConvertible {
    private var lap = ContinuousClock.now
    private var steps: [(name: String, took: Duration)] = []

    private let report: (@Sendable (String) -> Void)?

    /// `report` hears each step as it ends (`co-occurrence: 812.4 ms`), for progress on a terminal.
    package init(report: (@Sendable (String) -> Void)? = nil) { self.report = report }

    /// Ends the step running since the last mark (or since the timings were made), naming it.
    package mutating func mark(_ name: String) {
        let now = ContinuousClock.now
        steps.append((name, now - lap))
        report?("\(name): \(Self.milliseconds(now - lap)) ms")
        lap = now
    }

    package var description: String {
        steps.map { "\($0.name) \(Self.milliseconds($0.took)) ms" }.joined(separator: ", ")
    }

    /// `12.3`: milliseconds with one decimal.
    static func milliseconds(_ duration: Duration) -> String {
        let tenths = duration.components.seconds * 10_000 + duration.components.attoseconds / 100_000_000_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
