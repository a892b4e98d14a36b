import Foundation
import Postgres

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
        let checksum = sha256Hex(Data(document.text.utf8))
        return try await client.withConnection { db in
            try await db.withTransaction { tx in
                try await tx.advisoryTransactionLock(Self.lock)
                let stored = try await tx.query("SELECT document::text, checksum FROM cdp.profile_config WHERE name = 'catalog'")
                    .first.map { try $0.decode((String, String).self) }
                if stored?.1 == checksum { return [] }
                let old = try stored.map { try Catalog.parse(Data($0.0.utf8)) }
                try await tx.execute("""
                    INSERT INTO cdp.profile_config (name, document, checksum) VALUES ('catalog', \(document), \(checksum))
                    ON CONFLICT (name) DO UPDATE SET document = excluded.document, checksum = excluded.checksum, applied_at = now()
                    """)
                try await ProfileViews.refresh(tx)
                return catalog.changes(from: old)
            }
        }
    }

    /// The catalog in force, or nil if none has been applied.
    public func current() async throws -> Catalog? {
        guard let text = try await client.query("SELECT document::text FROM cdp.profile_config WHERE name = 'catalog'")
            .first?[0].decode(String.self) else { return nil }
        return try Catalog.parse(Data(text.utf8))
    }
}
