import Foundation
import Logging
import Postgres

/// What a destination is asked to do with one row.
public enum SyncOperation: String, Sendable, Codable, CaseIterable {
    /// Create or update the record (modes `upsert` and `mirror`).
    case upsert
    /// Update an existing record only (mode `update`); a destination may reject a row it does not have.
    case update
    /// Create the record (mode `insert`; sent once per key).
    case insert
    /// Delete the record (mode `mirror`, a row gone from the source).
    case delete
    /// Add the member to the audience (mode `audience`).
    case add
    /// Remove the member from the audience (mode `audience`, a row gone from the source).
    case remove
}

/// One change to deliver: a row of the source that was added, changed or removed since the last delivery.
public struct SyncChange: Sendable, Equatable {
    public var operation: SyncOperation
    /// The row's primary key, as a JSON object of its key columns (`{"profile_id": "…"}`).
    public var key: JSONValue
    /// The mapped fields, as a JSON object (for a delete or remove: the fields last delivered).
    public var fields: JSONValue
    /// Stable for the same change of the same row of the same sync: a destination can drop a repeated delivery.
    public var idempotencyKey: String
    /// In `audience` mode, for a member whose fields changed: the fields last delivered. An audience destination
    /// removes the identifiers that changed (an old email's hash), so the audience does not keep matching them.
    public var previousFields: JSONValue?

    public init(
        operation: SyncOperation, key: JSONValue, fields: JSONValue, idempotencyKey: String, previousFields: JSONValue? = nil
    ) {
        self.operation = operation
        self.key = key
        self.fields = fields
        self.idempotencyKey = idempotencyKey
        self.previousFields = previousFields
    }

    /// The text of `field`, looked up in the fields, then in the key (a string, or a number as written; nil for
    /// anything else): how destinations find the email or phone they match on.
    public func text(_ field: String) -> String? {
        for value in [fields[field], key[field]] {
            switch value {
            case .string(let text)?: return text
            case .number(let text)?: return text
            default: continue
            }
        }
        return nil
    }
}

/// The outcome for one change of a batch the destination accepted.
public enum ChangeResult: Sendable, Equatable {
    /// Confirmed by the destination: the delivered state advances.
    case delivered
    /// Refused for this row only (bad email, unknown record, …): recorded in `cdp.sync_errors` and tried again on
    /// later runs; the delivered state does not advance.
    case rejected(String)
}

/// A failure of a whole batch. Nothing of the batch counts as delivered.
public struct DestinationError: ReportedError {
    /// Worth trying again: a timeout, a connection failure, HTTP 429 or 5xx.
    public var retryable: Bool
    /// How long the destination asked to wait (`Retry-After`).
    public var retryAfter: Duration?
    public var description: String

    public init(_ description: String, retryable: Bool, retryAfter: Duration? = nil) {
        self.description = description
        self.retryable = retryable
        self.retryAfter = retryAfter
    }
}

/// A place syncs deliver to. One instance serves one run of one sync.
///
/// `send` gets batches in order (at most the sync's batch size each) and returns one result per change, in the same
/// order; it throws ``DestinationError`` when the batch as a whole failed (the runner retries it with backoff when
/// `retryable`). A destination whose deliveries only become real at the end of the run (a file renamed into place)
/// sets ``confirmsAtFinish``: the runner then advances the delivered state only after ``finish()`` returns.
public protocol Destination: Sendable {
    /// The largest batch this destination takes (the sync's batch size is capped to it).
    var maxBatchSize: Int { get }
    /// Deliveries are confirmed by ``finish()``, not by `send`.
    var confirmsAtFinish: Bool { get }
    /// The account whose rate limit this destination is subject to (a Braze workspace's API key, a Meta access token,
    /// a webhook URL), as an opaque key that holds no secret: syncs to one account share one request budget in a
    /// process (their `rateLimit` spaces their requests together). Nil: each sync has its own.
    var account: String? { get }
    func send(_ batch: [SyncChange]) async throws -> [ChangeResult]
    /// Called once after the last batch of a run that did not fail.
    func finish() async throws
    /// Called once when the run ends, whatever happened (close connections, remove temporary files).
    func close() async
}

extension Destination {
    public var maxBatchSize: Int { 10_000 }
    public var confirmsAtFinish: Bool { false }
    public var account: String? { nil }
    public func finish() async throws {}
    public func close() async {}
}

/// What a destination is built from: the sync's name, its run, its settings from the sync file.
public struct DestinationContext: Sendable {
    public var sync: String
    public var runID: Int64
    /// The `destination` object of the sync definition (including `type`).
    public var settings: JSONValue
    /// Environment for `env:NAME` secrets.
    public var environment: [String: String]
    /// The Tributary database (for destinations that write to it).
    public var client: PostgresClient?
    public var logger: Logger

    public init(
        sync: String, runID: Int64, settings: JSONValue, environment: [String: String] = ProcessInfo.processInfo.environment,
        client: PostgresClient? = nil, logger: Logger = Logger(label: "tributary.sync")
    ) {
        self.sync = sync
        self.runID = runID
        self.settings = settings
        self.environment = environment
        self.client = client
        self.logger = logger
    }

    /// A string setting; `env:NAME` reads the environment variable NAME (secrets stay out of sync files).
    public func string(_ key: String, required: Bool = true) throws -> String? {
        guard case .string(let text)? = settings[key] else {
            if settings[key] != nil && settings[key] != .null { throw SyncError("destination.\(key): must be a string") }
            if required { throw SyncError("destination.\(key): required") }
            return nil
        }
        if text.hasPrefix("env:") {
            let name = String(text.dropFirst(4))
            guard let value = environment[name], !value.isEmpty else {
                throw SyncError("destination.\(key): the environment variable \(name) is not set")
            }
            return value
        }
        return text
    }
}

/// Builds destinations by `type`. ``DestinationRegistry/core()`` (the syncs module) registers `file` and `postgres`; HTTP destinations (`webhook`, `braze`,
/// `meta_audience`) come from the `TributaryDestinations` module.
public struct DestinationRegistry: Sendable {
    public typealias Factory = @Sendable (DestinationContext) async throws -> any Destination
    /// A check of the settings when a sync file is applied (nil: none).
    public typealias Validator = @Sendable (JSONValue) throws -> Void

    /// A check of the settings against the whole sync (its fields, key and mode) when a sync file is applied.
    public typealias SyncValidator = @Sendable (SyncDefinition) throws -> Void

    var factories: [String: Factory] = [:]
    var validators: [String: Validator] = [:]
    var syncValidators: [String: SyncValidator] = [:]

    public init() {}

    public mutating func register(
        _ type: String, validate: Validator? = nil, validateSync: SyncValidator? = nil, make: @escaping Factory
    ) {
        factories[type] = make
        validators[type] = validate
        syncValidators[type] = validateSync
    }

    /// The destination's check of the whole sync (a template naming a field the sync does not map, say).
    public func validate(sync: SyncDefinition) throws {
        guard case .string(let type)? = sync.destination["type"] else { return }
        try syncValidators[type]?(sync)
    }

    public var types: [String] { factories.keys.sorted() }

    public func validate(_ settings: JSONValue) throws {
        guard case .string(let type)? = settings["type"] else { throw SyncError("destination.type: required") }
        guard factories[type] != nil else {
            throw SyncError("destination.type: unknown destination '\(type)'; known: \(types.joined(separator: ", "))")
        }
        try validators[type]?(settings)
    }

    public func make(_ context: DestinationContext) async throws -> any Destination {
        guard case .string(let type)? = context.settings["type"], let factory = factories[type] else {
            throw SyncError("destination.type: unknown destination (known: \(types.joined(separator: ", ")))")
        }
        return try await factory(context)
    }
}

/// A problem with a sync: its definition, its source or its run.
public struct SyncError: ReportedError, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
