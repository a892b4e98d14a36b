import Logging
import Postgres
import TributaryModel
import TributaryProfiles
import TributarySegments

/// What follows new scores: the segments that read them (a `prediction` condition, or a computed-trait condition on
/// a predictive trait, directly or through a referenced segment) refresh their members at once, so that an audience
/// built on a score follows it when it is written rather than at the next scheduled refresh.
public enum PredictionHandOff {
    /// Refreshes the members of the segments that read scores; returns what changed (nothing when none reads them).
    @discardableResult
    public static func refreshSegments(client: PostgresClient, logger: Logger) async throws -> SegmentMembership.Report {
        let segments = try await SegmentStore(client: client, logger: logger).current()
        let computed = try await ProfileAdmin(client: client, logger: logger).current()
        let names = segments.readingPredictions(computed: computed)
        guard !names.isEmpty else { return SegmentMembership.Report() }
        let report = try await SegmentMembership(client: client, logger: logger).refresh(names)
        logger.info(
            "predictions: segments that read scores refreshed",
            metadata: [
                "segments": "\(names.joined(separator: ","))", "entered": "\(report.entered)", "exited": "\(report.exited)",
            ])
        return report
    }
}
