import Foundation
import Postgres
import TributaryProfiles

/// Real-time segments as a follower of the profile stage: re-evaluates the real-time segments of the profiles a batch
/// changed in the batch's own transaction, records entries and exits in `cdp.segment_changes`, and notifies
/// ``SegmentMembership/changesChannel`` when there were any (real-time activation listens).
public struct RealtimeSegments: ProfileFollower {
    public init() {}

    public func profilesChanged(_ tx: PostgresConnection, profiles: [UUID]) async throws -> Int {
        let changes = try await SegmentMembership.reevaluate(tx, profiles: profiles)
        if changes > 0 { try await tx.execute("SELECT pg_notify(\(SegmentMembership.changesChannel), '')") }
        return changes
    }
}
