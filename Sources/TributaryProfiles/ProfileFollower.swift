import Foundation
import Postgres

/// Work that follows the profile stage inside its batch transaction, for the profiles the batch changed, once their
/// traits and computed traits are current. Real-time segments follow this way (`RealtimeSegments`, module
/// TributarySegments), so a segment membership never runs ahead of the profile data it was decided on, and a batch
/// that rolls back takes the follower's changes with it.
///
/// The profile stage knows only this protocol, not what follows it: modules downstream of profiles plug in here, and
/// the service assembly decides which do.
public protocol ProfileFollower: Sendable {
    /// Brings what this follower derives up to date for `profiles` in `tx`, the profile stage's transaction; returns
    /// the number of changes it recorded (the stage reports their sum).
    func profilesChanged(_ tx: PostgresConnection, profiles: [UUID]) async throws -> Int
}
