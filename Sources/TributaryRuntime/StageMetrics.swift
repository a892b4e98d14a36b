import Metrics
import Postgres

/// A stream stage's metrics, through swift-metrics (whatever backend the process bootstrapped, or a task-local factory
/// bound with `withMetricsFactory`; none: no-ops). Dimension `stage` names the stage (`identity`, `profiles`, `realtime`):
///
/// - `tributary_stage_events_total`: events processed (for `realtime`: segment changes followed);
/// - `tributary_stage_batch_duration_seconds`: the time of each batch (one transaction; for `realtime`, one pass);
/// - `tributary_stage_lag_events`: events stored but not yet past the stage's checkpoint
///   (the last `cdp.events_seq` value minus the checkpoint), sampled every second by the stage's loop.
public struct StageMetrics: Sendable {
    /// The metrics of the stage whose loop runs the current task; nil outside a stage loop (a one-off `catchUp`).
    @TaskLocal package static var current: StageMetrics?

    let processed: Counter
    let duration: Timer
    let lag: Gauge

    /// The metrics of stage `stage`, made by `factory` (by default the task-local or bootstrapped one).
    public init(stage: String, factory: any MetricsFactory = MetricsSystem.factory) {
        let dimensions = [("stage", stage)]
        processed = Counter(label: "tributary_stage_events_total", dimensions: dimensions, factory: factory)
        duration = Timer(label: "tributary_stage_batch_duration_seconds", dimensions: dimensions, factory: factory)
        lag = Gauge(label: "tributary_stage_lag_events", dimensions: dimensions, factory: factory)
    }

    /// Records a batch that processed `events` (an empty batch, the end of a catch-up, is not recorded).
    package func batch(events: Int, duration elapsed: Duration) {
        guard events > 0 else { return }
        processed.increment(by: Int64(events))
        duration.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }

    /// Samples the events behind the checkpoint `checkpoint` (a row of `cdp.stage_checkpoints`) every `interval`
    /// until the task is cancelled. A failed sample is skipped: the gauge keeps its last value.
    func sampleLag(checkpoint: Checkpoint, client: PostgresClient, every interval: Duration) async {
        while !Task.isCancelled {
            if let behind = try? await client.query(
                """
                SELECT greatest(0, (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cdp.events_seq)
                    - \(checkpoint.seqSQL))
                """
            ).scalar(Int64.self) {
                lag.record(behind)
            }
            try? await Task.sleep(for: interval)
        }
    }
}
