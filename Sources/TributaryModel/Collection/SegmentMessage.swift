import Foundation
import Postgres

/// The calls of Segment's Tracking API.
public enum CallType: String, Sendable, CaseIterable {
    case identify, track, page, screen, group, alias
}

/// One call that passed validation, normalized and ready to store.
public struct IncomingEvent: Sendable, Equatable {
    public var messageID: String
    public var type: CallType
    public var event: String?
    public var name: String?
    public var userID: String?
    public var anonymousID: String?
    public var groupID: String?
    public var previousID: String?
    /// When it happened, corrected for the client's clock skew.
    public var timestamp: Date
    public var originalTimestamp: Date?
    public var sentAt: Date?
    public var receivedAt: Date
    /// JSON text of the objects, numbers as the client wrote them.
    public var properties: String
    public var traits: String
    public var context: String
    public var integrations: String

    public init(
        messageID: String, type: CallType, event: String? = nil, name: String? = nil, userID: String? = nil,
        anonymousID: String? = nil, groupID: String? = nil, previousID: String? = nil, timestamp: Date,
        originalTimestamp: Date? = nil, sentAt: Date? = nil, receivedAt: Date, properties: String, traits: String,
        context: String, integrations: String
    ) {
        self.messageID = messageID
        self.type = type
        self.event = event
        self.name = name
        self.userID = userID
        self.anonymousID = anonymousID
        self.groupID = groupID
        self.previousID = previousID
        self.timestamp = timestamp
        self.originalTimestamp = originalTimestamp
        self.sentAt = sentAt
        self.receivedAt = receivedAt
        self.properties = properties
        self.traits = traits
        self.context = context
        self.integrations = integrations
    }
}

/// A problem with one call of a request, located by a path such as `batch[3].event`.
public struct ValidationIssue: Sendable, Equatable, CustomStringConvertible {
    /// The position in the batch; nil for single calls.
    public var index: Int?
    public var field: String
    public var message: String
    public var path: String {
        guard let index else { return field }
        return field.isEmpty ? "batch[\(index)]" : "batch[\(index)].\(field)"
    }
    public var description: String { "\(path): \(message)" }

    public init(index: Int? = nil, field: String, message: String) {
        self.index = index
        self.field = field
        self.message = message
    }
}

/// A request that cannot be taken at all (not JSON, not an object, over a limit).
public struct RequestRejection: Error, Sendable, CustomStringConvertible {
    /// A stable code for clients and metrics, for example `invalid_json` or `batch_too_many_events`.
    public var code: String
    public var message: String
    public var description: String { message }
    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// Segment's limits, enforced per request.
public struct CollectionLimits: Sendable {
    public var maxEventBytes = 32 * 1024
    public var maxBatchBytes = 500 * 1024
    public var maxBatchEvents = 2500
    /// A timestamp further than this after `receivedAt` is replaced by `receivedAt` (kept in `original_timestamp`).
    public var maxFutureSkew: TimeInterval = 24 * 3600
    /// Timestamps before this are refused.
    public var earliestTimestamp = Date(timeIntervalSince1970: 0)
    public init() {}
}

/// Turns request bodies into validated calls, following Segment's HTTP Tracking API.
public struct SegmentParser: Sendable {
    public var limits: CollectionLimits

    public init(limits: CollectionLimits = CollectionLimits()) { self.limits = limits }

    /// The longest `messageId` accepted, in characters (the Segment spec's limit).
    public static let maxMessageIDCharacters = 100

    /// What a request body holds.
    public struct Parsed: Sendable {
        public var events: [IncomingEvent] = []
        public var issues: [ValidationIssue] = []
        /// `writeKey` from the body, if any (Basic auth is preferred).
        public var writeKey: String?
    }

    /// Parses the body of `POST /v1/<type>` (a single call) or, with `type` nil, `POST /v1/batch`.
    ///
    /// Calls that fail validation are listed in ``Parsed/issues`` and left out; the valid ones are kept.
    public func parse(_ body: [UInt8], type: CallType?, receivedAt: Date) throws -> Parsed {
        if body.count > limits.maxBatchBytes {
            throw RequestRejection(
                "request_too_large",
                "the request body is \(body.count) bytes; the limit is \(limits.maxBatchBytes) bytes (500 KB)")
        }
        let document: JSONValue
        do {
            document = try JSONParser.parse(body)
        } catch let error as JSONParseError {
            throw RequestRejection("invalid_json", error.description)
        }
        guard case .object = document else { throw RequestRejection("invalid_json", "the body must be a JSON object") }
        var parsed = Parsed()
        if case .string(let key)? = document["writeKey"] { parsed.writeKey = key }
        if let type {
            if body.count > limits.maxEventBytes {
                throw RequestRejection(
                    "event_too_large", "the event is \(body.count) bytes; the limit is \(limits.maxEventBytes) bytes (32 KB)")
            }
            do {
                parsed.events.append(try event(document, type: type, index: nil, batch: nil, receivedAt: receivedAt))
            } catch let issue as ValidationIssue {
                parsed.issues.append(issue)
            }
            return parsed
        }
        guard case .array(let items)? = document["batch"] else {
            throw RequestRejection("invalid_batch", "batch: required, and must be an array of calls")
        }
        if items.count > limits.maxBatchEvents {
            throw RequestRejection(
                "batch_too_many_events", "the batch holds \(items.count) events; the limit is \(limits.maxBatchEvents)")
        }
        for (index, item) in items.enumerated() {
            do {
                parsed.events.append(try call(item, index: index, batch: document, receivedAt: receivedAt))
            } catch let issue as ValidationIssue {
                parsed.issues.append(issue)
            }
        }
        return parsed
    }

    /// Validates one call whose `type` is in the object itself (a line of a JSONL import, an item of a batch).
    ///
    /// - Throws: ``ValidationIssue`` located at `index`.
    public func call(_ item: JSONValue, index: Int?, batch: JSONValue? = nil, receivedAt: Date) throws -> IncomingEvent {
        guard case .object = item else { throw ValidationIssue(index: index, field: "", message: "must be an object") }
        let size = item.serializedSize
        if size > limits.maxEventBytes {
            throw ValidationIssue(
                index: index, field: "", message: "the event is \(size) bytes; the limit is \(limits.maxEventBytes) bytes (32 KB)"
            )
        }
        guard let typeValue = item["type"] else {
            throw ValidationIssue(index: index, field: "type", message: batch == nil ? "required" : "required in batch items")
        }
        guard case .string(let typeName) = typeValue, let type = CallType(rawValue: typeName) else {
            throw ValidationIssue(
                index: index, field: "type",
                message: "must be one of \(CallType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return try event(item, type: type, index: index, batch: batch, receivedAt: receivedAt)
    }

    private func event(
        _ item: JSONValue, type: CallType, index: Int?, batch: JSONValue?, receivedAt: Date
    ) throws -> IncomingEvent {
        func issue(_ field: String, _ message: String) -> ValidationIssue {
            ValidationIssue(index: index, field: field, message: message)
        }
        func identifier(_ field: String) throws -> String? {
            switch item[field] {
            case nil, .null?: return nil
            case .string(let text)?:
                if text.utf8.count > 1024 { throw issue(field, "longer than 1024 bytes") }
                return text.isEmpty ? nil : text
            case .number(let text)?: return text
            default: throw issue(field, "must be a string or a number")
            }
        }
        func text(_ field: String) throws -> String? {
            switch item[field] {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw issue(field, "must be a string")
            }
        }
        func object(_ field: String, in value: JSONValue? = nil) throws -> [(String, JSONValue)] {
            switch (value ?? item)[field] {
            case nil, .null?: return []
            case .object(let members)?: return members
            default: throw issue(field, "must be an object")
            }
        }
        func time(_ field: String, in value: JSONValue) throws -> Date? {
            switch value[field] {
            case nil, .null?: return nil
            case .string(let text)?:
                guard let date = try? PostgresTime.parse(text), text.count >= 10 else {
                    throw issue(field, "'\(text.prefix(40))' is not an ISO-8601 timestamp")
                }
                if date < limits.earliestTimestamp { throw issue(field, "is before 1970-01-01") }
                return date
            default: throw issue(field, "must be an ISO-8601 timestamp string")
            }
        }

        let userID = try identifier("userId")
        let anonymousID = try identifier("anonymousId")
        let messageID = try identifier("messageId") ?? UUID().uuidString.lowercased()
        if messageID.count > Self.maxMessageIDCharacters {
            throw issue(
                "messageId",
                "longer than \(Self.maxMessageIDCharacters) characters (\(messageID.count)); Segment's limit, which deduplication relies on"
            )
        }
        if type != .alias && userID == nil && anonymousID == nil {
            throw issue("userId", "userId or anonymousId is required")
        }
        let event = try text("event")
        if type == .track && (event ?? "").isEmpty { throw issue("event", "required for track calls") }
        let groupID = try identifier("groupId")
        if type == .group && groupID == nil { throw issue("groupId", "required for group calls") }
        let previousID = try identifier("previousId")
        if type == .alias {
            if previousID == nil { throw issue("previousId", "required for alias calls") }
            if userID == nil { throw issue("userId", "required for alias calls") }
        }

        // Batch-level context and integrations apply to every call; the call's own keys win.
        let context = try (batch.map { try object("context", in: $0) } ?? []) + object("context")
        let integrations = try (batch.map { try object("integrations", in: $0) } ?? []) + object("integrations")
        let properties = try object("properties")
        let traits = try object("traits")

        let explicit = try time("timestamp", in: item)
        let original = try time("originalTimestamp", in: item)
        let sentAt = try time("sentAt", in: item) ?? (batch.map { try time("sentAt", in: $0) } ?? nil)
        var timestamp: Date
        if let explicit {
            timestamp = explicit
        } else if let original, let sentAt {
            timestamp = receivedAt.addingTimeInterval(-sentAt.timeIntervalSince(original))
        } else {
            timestamp = original ?? receivedAt
        }
        if timestamp.timeIntervalSince(receivedAt) > limits.maxFutureSkew { timestamp = receivedAt }
        if timestamp < limits.earliestTimestamp { throw issue("timestamp", "is before 1970-01-01 after clock-skew correction") }

        return IncomingEvent(
            messageID: messageID, type: type, event: event, name: try text("name"), userID: userID,
            anonymousID: anonymousID, groupID: groupID, previousID: previousID, timestamp: timestamp,
            originalTimestamp: original ?? explicit, sentAt: sentAt, receivedAt: receivedAt,
            properties: JSONValue.object(properties).serialized, traits: JSONValue.object(traits).serialized,
            context: JSONValue.object(context).serialized, integrations: JSONValue.object(integrations).serialized)
    }
}

extension ValidationIssue: Error {}
