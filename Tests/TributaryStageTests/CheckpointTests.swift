import Foundation
import Postgres
import PostgresTesting
import Testing
@testable import TributaryRuntime
@testable import TributaryProfiles

/// `Checkpoint`: the one reader and mover of `cdp.stage_checkpoints`.
@Suite struct CheckpointTests {
    @Test func checkpointsStartAtZeroMoveAndKeepTheirGeneration() async throws {
        try await TestDatabase.withFreshDatabase { (client) async throws in
            try await IdentityFixture.migrated(client)
            try await client.withConnection { (db) async throws in
                let probe = Checkpoint("test.probe")
                #expect(try await probe.seq(db) == 0)
                try await probe.set(db, seq: 42)
                #expect(try await probe.seq(db) == 42)
                try await probe.advanceGeneration(db)
                try await probe.advanceGeneration(db)
                try await probe.set(db, seq: 50)
                let (seq, generation) = try await db.query("SELECT \(probe.seqSQL), \(probe.generationSQL)").first!
                    .decode((Int64, Int64).self)
                #expect(seq == 50 && generation == 2, "moving the seq keeps the generation")
                try await probe.set(db, seq: 60, generation: 7)
                #expect(try await db.query("SELECT \(probe.generationSQL)").scalar(Int64.self) == 7)
                // A new generation on a row that does not exist yet starts at 1.
                try await Checkpoint("test.fresh").advanceGeneration(db)
                #expect(try await db.query("SELECT \(Checkpoint("test.fresh").generationSQL)").scalar(Int64.self) == 1)
                // Moving creates the row; one row per checkpoint, whatever moved it.
                let rows = try await db.query(
                    "SELECT stage, seq FROM cdp.stage_checkpoints WHERE stage LIKE 'test.%' ORDER BY stage"
                ).map { try $0.decode((String, Int64).self) }
                #expect(rows.map(\.0) == ["test.fresh", "test.probe"] && rows.map(\.1) == [0, 60])
                let moved = try await db.query("SELECT \(probe.updatedAtSQL) > now() - interval '1 minute'").scalar(Bool.self)
                #expect(moved)
            }
        }
    }
}
