import Foundation
import Postgres

/// A consumer's position in what it follows: one row of `cdp.stage_checkpoints` (`seq`, `generation`, `updated_at`).
/// The one place that reads and moves checkpoints; each stage module names its own (`Checkpoint.identity` in
/// TributaryIdentity, `Checkpoint.profiles` and its companions in TributaryProfiles).
///
/// A checkpoint is read and moved inside the consumer's batch transaction, so it moves exactly when the batch's
/// work commits. The fragments (``seqSQL``, ``generationSQL``, ``updatedAtSQL``) compose into larger statements, so a
/// stage reads several checkpoints in one round trip.
public struct Checkpoint: Sendable, Hashable, CustomStringConvertible {
    /// The row's `stage` value.
    public let name: String

    public init(_ name: String) { self.name = name }

    public var description: String { name }

    /// The sequence number reached (0 while the row does not exist).
    public var seqSQL: PostgresQuery {
        "coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = \(name)), 0)"
    }

    /// The generation of what it follows (0 while the row does not exist); a producer's rebuild moves it.
    public var generationSQL: PostgresQuery {
        "coalesce((SELECT generation FROM cdp.stage_checkpoints WHERE stage = \(name)), 0)"
    }

    /// When it last moved (NULL while the row does not exist).
    public var updatedAtSQL: PostgresQuery {
        "(SELECT updated_at FROM cdp.stage_checkpoints WHERE stage = \(name))"
    }

    /// The sequence number reached (0 while the row does not exist).
    public func seq(_ db: PostgresConnection) async throws -> Int64 {
        try await db.query("SELECT \(seqSQL)").scalar(Int64.self)
    }

    /// Moves the checkpoint to `seq` (and `generation`, if given), creating the row if needed.
    public func set(_ db: PostgresConnection, seq: Int64, generation: Int64? = nil) async throws {
        try await db.execute(
            """
            INSERT INTO cdp.stage_checkpoints (stage, seq, generation) VALUES (\(name), \(seq), coalesce(\(generation), 0))
            ON CONFLICT (stage) DO UPDATE
            SET seq = excluded.seq, generation = coalesce(\(generation), cdp.stage_checkpoints.generation), updated_at = excluded.updated_at
            """)
    }

    /// Starts a new generation (a rebuild of what this checkpoint's producer made), creating the row if needed:
    /// consumers that follow it see their recorded generation differ and rebuild rather than replay.
    public func advanceGeneration(_ db: PostgresConnection) async throws {
        try await db.execute(
            """
            INSERT INTO cdp.stage_checkpoints (stage, generation) VALUES (\(name), 1)
            ON CONFLICT (stage) DO UPDATE SET generation = cdp.stage_checkpoints.generation + 1
            """)
    }
}
