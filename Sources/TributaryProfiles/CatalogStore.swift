import Foundation
import Postgres
import TributaryModel

/// The typed catalog in force: one document in `cdp.profile_config` (row `catalog`), stored in ``Catalog/canonical``
/// form (every trait's `column` written out) as compact JSON with sorted keys, with the SHA-256 of that text.
public struct CatalogStore: Sendable {
    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    static let lock = AdvisoryLockKey(name: "tributary.catalog")

    /// Validates `catalog` and puts it in force, then regenerates the typed columns of `cdp.profiles`
    /// (``ProfileViews/refresh(_:)``), in one transaction. Returns what changed; applying the catalog in force
    /// again changes nothing and returns no changes.
    @discardableResult
    public func apply(_ catalog: Catalog) async throws -> [CatalogChange] {
        try catalog.validate()
        let document = try PostgresJSON(encoding: catalog.canonical)
        return try await client.withConnection { db in
            try await db.withTransaction { tx in
                try await tx.advisoryTransactionLock(Self.lock)
                let old = try await ProfileConfig.catalog(tx)
                guard try await ProfileConfig.store("catalog", json: Data(document.text.utf8), tx) else { return [] }
                try await ProfileViews.refresh(tx)
                return catalog.changes(from: old)
            }
        }
    }

    /// The catalog in force, or nil if none has been applied.
    public func current() async throws -> Catalog? {
        try await client.withConnection { try await ProfileConfig.catalog($0) }
    }
}
