/// The time each step of a batch took, for the per-step timings the stages and the writer log at debug level
/// ("load nodes 12.3 ms, seen times 4.0 ms").
package struct StepTimings: CustomStringConvertible {
    private var lap = ContinuousClock.now
    private var steps: [(name: String, took: Duration)] = []

    package init() {}

    /// Ends the step running since the last mark (or since the timings were made), naming it.
    package mutating func mark(_ name: String) {
        let now = ContinuousClock.now
        steps.append((name, now - lap))
        lap = now
    }

    package var description: String {
        steps.map { step in
            let tenths = step.took.components.seconds * 10_000 + step.took.components.attoseconds / 100_000_000_000_000
            return "\(step.name) \(tenths / 10).\(tenths % 10) ms"
        }.joined(separator: ", ")
    }
}
