import Foundation
import Logging
import Postgres
import TributaryIdentity
import TributaryModel
import TributaryRuntime

/// Applying computed trait definitions, and reading profiles' state for operators.
public struct ProfileAdmin: Sendable {
    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Reads a computed traits file and validates it against the catalog in force (if one was applied).
    public func load(_ data: Data) async throws -> ComputedTraitDefinitions {
        let catalog = try await client.withConnection { try await ProfileConfig.catalog($0) }
        return try ComputedTraitDefinitions.parse(data, catalog: catalog)
    }

    /// Stores `definitions` and regenerates `cdp.profiles` in one transaction (so definitions whose columns would
    /// collide are refused as a whole). Returns false if exactly these definitions were already in force.
    @discardableResult
    public func apply(_ definitions: ComputedTraitDefinitions) async throws -> Bool {
        let catalog = try await client.withConnection { try await ProfileConfig.catalog($0) }
        try definitions.validate(catalog: catalog)
        return try await client.withTransaction { tx in
            try await tx.advisoryTransactionLock(ProfileStage.processorLock)
            let changed = try await ProfileConfig.store("computed_traits", json: try definitions.canonicalJSON(), tx)
            try await ProfileViews.refresh(tx)
            return changed
        }
    }

    /// The definitions in force (the defaults if none were applied).
    public func current() async throws -> ComputedTraitDefinitions {
        try await client.withConnection { try await ProfileConfig.load(ComputedTraitDefinitions.self, "computed_traits", $0) }
            ?? ComputedTraitDefinitions()
    }

    /// Counts for `tributary profiles status`.
    public struct Status: Sendable {
        public var checkpoint: Int64
        public var identityCheckpoint: Int64
        public var profiles: Int
        public var profilesWithData: Int
        public var traitValues: Int
        public var traitChanges: Int
        public var lastRecompute: Date?
    }

    public func status() async throws -> Status {
        let row = try await client.query(
            """
            SELECT \(Checkpoint.profiles.seqSQL), \(Checkpoint.identity.seqSQL),
                   (SELECT count(*) FROM cdp.identity_profiles), (SELECT count(*) FROM cdp.profile_data),
                   (SELECT count(*) FROM cdp.profile_trait_values WHERE value <> 'null'),
                   (SELECT count(*) FROM cdp.trait_history),
                   \(Checkpoint.profileRecompute.updatedAtSQL)
            """
        ).first!
        let (checkpoint, identity, profiles, withData, values, changes, recompute) =
            try row.decode((Int64, Int64, Int, Int, Int, Int, Date?).self)
        return Status(
            checkpoint: checkpoint, identityCheckpoint: identity, profiles: profiles, profilesWithData: withData,
            traitValues: values, traitChanges: changes, lastRecompute: recompute)
    }
}
