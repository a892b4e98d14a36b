import Foundation
import Postgres
import TributaryCollection
import TributaryModel
import TributaryProfiles

extension PrivacyRequests {
    /// The internal source consent events recorded through the API come from (created disabled: its write key,
    /// never shown, cannot be used).
    public static let sourceName = "tributary-privacy"

    /// What recording consent did.
    public struct ConsentReceipt: Sendable, Equatable {
        public var requestID: Int64
        /// The message id of the consent event.
        public var messageID: String
        /// The event was stored (false: it carries a suppressed identifier and was dropped).
        public var stored: Bool
    }

    /// Records consent preferences (`purpose → granted`) for the person one of whose identifiers is `identifier`,
    /// as one event through the normal ingestion path (``EventWriter``), from the internal source
    /// ``sourceName``: a `track` of ``Consent/eventName`` carrying `context.consent.categoryPreferences` and the
    /// identifier (`userId`, `anonymousId`, `context.traits.email` / `.phone`, or `context.externalIds`). The
    /// identity and profile stages then resolve it like any event: `cdp.profile_consent` holds the current consent,
    /// `cdp.consent_changes` its history. Logged as `privacy.consent` with the purposes.
    ///
    /// Purposes are non-empty names without control characters, at most 100 characters.
    public func recordConsent(
        identifier: String, purposes: [String: Bool], actor: AuditLog.Actor, writer: EventWriter
    ) async throws -> ConsentReceipt {
        try Self.validate(purposes: purposes)
        let subject = try await resolve(identifier)
        let request = try await begin("consent", subject.requested, actor: actor)
        do {
            let source = try await Self.internalSource(client)
            // A profile id is no identifier an event can carry: the profile's first identifier stands for it.
            var carried = subject.requested
            if carried.kind == ProfileDocuments.profileIDKind {
                guard let first = subject.identifiers.first else { throw PrivacyError("the profile has no identifiers") }
                carried = first
            }
            let event = Self.consentEvent(for: carried, purposes: purposes, request: request)
            let outcome = try await writer.write([event], sourceID: source)
            let stored = outcome.stored > 0
            let sortedPurposes = purposes.sorted { $0.key < $1.key }
            try await client.withTransaction { tx in
                try await Self.finish(
                    tx, request: request, kind: "consent", identifier: subject.requested, actor: actor,
                    counts: ["events": .number(String(outcome.stored)), "suppressed": .number(String(outcome.suppressed))],
                    details: [
                        ("purposes", .object(sortedPurposes.map { ($0.key, .bool($0.value)) })),
                        ("message_id", .string(event.messageID)),
                    ])
            }
            return ConsentReceipt(requestID: request, messageID: event.messageID, stored: stored)
        } catch {
            throw await fail(error, request: request, kind: "consent", subject: subject, actor: actor)
        }
    }

    /// Checks purposes as the consent API takes them; throws ``PrivacyError`` naming the bad one.
    public static func validate(purposes: [String: Bool]) throws {
        if purposes.isEmpty {
            throw PrivacyError("purposes: at least one purpose is required (for example {\"Marketing\": true})")
        }
        for name in purposes.keys.sorted() {
            let shown = name.replacingOccurrences(of: "\0", with: "\\0").prefix(100)
            if name.trimmingCharacters(in: .whitespaces).isEmpty { throw PrivacyError("purposes: a purpose name is empty") }
            if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                throw PrivacyError("purposes: '\(shown)' contains a control character")
            }
            if name.count > 100 { throw PrivacyError("purposes: '\(shown)…' is longer than 100 characters") }
        }
    }

    /// The consent event for `identifier`.
    static func consentEvent(for identifier: Identifier, purposes: [String: Bool], request: Int64) -> IncomingEvent {
        var context: [(String, JSONValue)] = [
            ("consent", ["categoryPreferences": .object(purposes.sorted { $0.key < $1.key }.map { ($0.key, .bool($0.value)) })]),
            ("library", ["name": .string(sourceName)]),
        ]
        switch identifier.kind {
        case "user_id", "anonymous_id": break
        case "email", "phone": context.append(("traits", .object([(identifier.kind, .string(identifier.value))])))
        default: context.append(("externalIds", [["type": .string(identifier.kind), "id": .string(identifier.value)]]))
        }
        let now = Date()
        return IncomingEvent(
            messageID: "privacy-consent-\(request)", type: .track, event: Consent.eventName, name: nil,
            userID: identifier.kind == "user_id" ? identifier.value : nil,
            anonymousID: identifier.kind == "anonymous_id" ? identifier.value : nil,
            groupID: nil, previousID: nil, timestamp: now, originalTimestamp: now, sentAt: nil, receivedAt: now,
            properties: "{}", traits: "{}", context: JSONValue.object(context).serialized, integrations: "{}")
    }

    /// The id of the internal source, created (disabled) the first time.
    static func internalSource(_ client: PostgresClient) async throws -> String {
        let store = SourceStore(client: client)
        if let source = try await store.named(sourceName) { return source.id }
        do {
            let (source, _) = try await store.create(name: sourceName)
            try await store.disable(name: sourceName)
            return source.id
        } catch let error as SourceError {
            // Created by a concurrent request.
            guard let source = try await store.named(sourceName) else { throw error }
            return source.id
        }
    }
}
