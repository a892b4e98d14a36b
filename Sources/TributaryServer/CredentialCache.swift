import TributaryCollection
import TributaryModel
import TributaryProfiles
import TributaryService

/// Credential lookups (write keys, API tokens), cached briefly so a busy caller costs no query per request.
///
/// Entries are keyed by the credential's SHA-256, never the credential itself. Unknown credentials are cached too,
/// so repeating a wrong one is cheap; past 10,000 entries, expired ones are dropped. A credential that `accepts`
/// refuses (not shaped like one) gets nil with neither a query nor an entry.
actor CredentialCache<Value: Sendable> {
    private let ttl: Duration
    private let accepts: @Sendable (String) -> Bool
    private let hash: @Sendable (String) -> String
    private let lookup: @Sendable (String) async throws -> Value?
    private var entries: [String: (value: Value?, expires: ContinuousClock.Instant)] = [:]

    init(
        ttl: Duration, accepts: @escaping @Sendable (String) -> Bool = { _ in true },
        hash: @escaping @Sendable (String) -> String,
        lookup: @escaping @Sendable (String) async throws -> Value?
    ) {
        self.ttl = ttl
        self.accepts = accepts
        self.hash = hash
        self.lookup = lookup
    }

    /// What `credential` belongs to, or nil; at most `ttl` old.
    func value(for credential: String) async throws -> Value? {
        guard accepts(credential) else { return nil }
        let key = hash(credential)
        let now = ContinuousClock.now
        if let entry = entries[key], entry.expires > now { return entry.value }
        let value = try await lookup(credential)
        if entries.count > 10_000 { entries = entries.filter { $0.value.expires > now } }
        entries[key] = (value, now + ttl)
        return value
    }
}

extension CredentialCache where Value == Source {
    /// Write keys: the enabled source each belongs to.
    init(sources store: SourceStore, ttl: Duration) {
        self.init(ttl: ttl, hash: SourceStore.hash) { try await store.authenticate(writeKey: $0) }
    }
}

extension CredentialCache where Value == APIToken {
    /// API token secrets: the unrevoked token each belongs to.
    init(tokens store: APITokenStore, ttl: Duration) {
        self.init(ttl: ttl, accepts: APITokenStore.looksLikeSecret, hash: APITokenStore.hash) { try await store.authenticate($0) }
    }
}
