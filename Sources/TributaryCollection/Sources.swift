import Foundation
import Postgres
import TributaryModel

/// A place events come from (a website, an app, a CRM export), with the write key its SDKs send.
public struct Source: Sendable, Equatable {
    public var id: String
    public var name: String
    public var enabled: Bool
    /// The first characters of the current write key, to tell keys apart; the key itself is never stored.
    public var writeKeyHint: String
    public var createdAt: Date
    public var keyRotatedAt: Date
    public var disabledAt: Date?
}

/// A failure of a source command, in one line.
public struct SourceError: ReportedError {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Sources in `cdp.sources`. Write keys are random, shown once, and stored only as SHA-256.
public struct SourceStore: Sendable {
    let client: PostgresClient

    public init(client: PostgresClient) { self.client = client }

    /// Creates a source; returns it with its write key (the only time the key is available).
    public func create(name: String) async throws -> (source: Source, writeKey: String) {
        let name = try Self.validName(name)
        let key = Self.generateWriteKey()
        let id = "src_" + Self.randomToken(length: 16)
        do {
            let rows = try await client.query(
                """
                INSERT INTO cdp.sources (source_id, name, write_key_sha256, write_key_hint)
                VALUES (\(id), \(name), \(Self.hash(key)), \(Self.hint(key)))
                RETURNING \(unescaped: Self.columns)
                """)
            return (try Self.source(rows[0]), key)
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            throw SourceError("a source named '\(name)' already exists")
        }
    }

    /// All sources, by name.
    public func list() async throws -> [Source] {
        try await client.query("SELECT \(unescaped: Self.columns) FROM cdp.sources ORDER BY name").map(Self.source)
    }

    /// Disables a source: its write key is refused (401) from then on; its events stay.
    @discardableResult
    public func disable(name: String) async throws -> Source {
        try await update(name, "enabled = false, disabled_at = coalesce(disabled_at, now())")
    }

    /// Enables a disabled source again.
    @discardableResult
    public func enable(name: String) async throws -> Source {
        try await update(name, "enabled = true, disabled_at = NULL")
    }

    /// Replaces a source's write key; the old key stops working at once. Returns the new key.
    public func rotateKey(name: String) async throws -> (source: Source, writeKey: String) {
        let key = Self.generateWriteKey()
        let rows = try await client.query(
            """
            UPDATE cdp.sources SET write_key_sha256 = \(Self.hash(key)), write_key_hint = \(Self.hint(key)),
                   key_rotated_at = now()
            WHERE name = \(name) RETURNING \(unescaped: Self.columns)
            """)
        guard let row = rows.first else { throw SourceError("there is no source named '\(name)'") }
        return (try Self.source(row), key)
    }

    /// The source with this name, or nil.
    public func named(_ name: String) async throws -> Source? {
        try await client.query("SELECT \(unescaped: Self.columns) FROM cdp.sources WHERE name = \(name)").first.map(Self.source)
    }

    /// The enabled source a write key belongs to, or nil for an unknown or disabled key.
    public func authenticate(writeKey: String) async throws -> Source? {
        let rows = try await client.query(
            """
            SELECT \(unescaped: Self.columns) FROM cdp.sources WHERE write_key_sha256 = \(Self.hash(writeKey)) AND enabled
            """)
        return try rows.first.map(Self.source)
    }

    private func update(_ name: String, _ assignments: String) async throws -> Source {
        let rows = try await client.query(
            "UPDATE cdp.sources SET \(unescaped: assignments) WHERE name = \(name) RETURNING \(unescaped: Self.columns)")
        guard let row = rows.first else { throw SourceError("there is no source named '\(name)'") }
        return try Self.source(row)
    }

    static let columns = "source_id, name, enabled, write_key_hint, created_at, key_rotated_at, disabled_at"

    static func source(_ row: PostgresRow) throws -> Source {
        let (id, name, enabled, hint, created, rotated, disabled) =
            try row.decode((String, String, Bool, String, Date, Date, Date?).self)
        return Source(
            id: id, name: name, enabled: enabled, writeKeyHint: hint, createdAt: created, keyRotatedAt: rotated,
            disabledAt: disabled)
    }

    static func validName(_ name: String) throws -> String {
        try checkedName(name, what: "a source name", error: SourceError.init)
    }

    /// SHA-256 of a write key, in hex: what is stored and looked up.
    public static func hash(_ key: String) -> String {
        sha256Hex(Data(key.utf8))
    }

    static func hint(_ key: String) -> String { String(key.prefix(8)) + "…" }

    /// `trb_` and 32 random base-62 characters (about 190 bits).
    static func generateWriteKey() -> String { "trb_" + randomToken(length: 32) }

    package static func randomToken(length: Int) -> String {
        let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<length).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] })
    }
}
