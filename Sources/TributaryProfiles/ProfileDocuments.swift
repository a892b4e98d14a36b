import Foundation
import Postgres
import TributaryModel
import TributaryRuntime

/// Profiles as the profile API serves them: one JSON document per profile, built by PostgreSQL in one call
/// (`cdp.profile_lookup` in `sql/0410_profile_api.sql`), so a lookup is one round trip and the text is passed on as
/// it is.
///
/// ```swift
/// let lookup = try await ProfileDocuments(client: client).lookup(kind: "email", value: "Alice@Example.COM", events: 20)
/// // SELECT outcome, document FROM cdp.profile_lookup($1, $2, $3)
/// if case .found(let document) = lookup { … }   // {"profile_id": "…", "traits": {…}, …}
/// ```
public struct ProfileDocuments: Sendable {
    let client: PostgresClient
    /// Where lookups are read when it is usable (``ReadReplica``): a streaming replica of `client`'s database.
    let replica: ReadReplica?

    public init(client: PostgresClient, replica: ReadReplica? = nil) {
        self.client = client
        self.replica = replica
    }

    /// Events in a document unless asked otherwise.
    public static let defaultEvents = 20
    /// The most events a document may hold.
    public static let maxEvents = 100
    /// The pseudo-kind that looks a profile up by its id (any id ever issued; merged-away ids resolve).
    public static let profileIDKind = "profile_id"

    /// The answer to a lookup.
    public enum Lookup: Sendable, Equatable {
        /// The profile's document (JSON text).
        case found(document: String)
        /// The identifier is a hub: shared by many people, it identifies no one profile.
        case hub(Identifier, threshold: Int)
        /// No profile holds the identifier (`value` normalized); `problem` is why the identity stage would refuse it.
        case notFound(Identifier, problem: String?)
        /// The kind is neither configured nor held by any identifier.
        case unknownKind(String, known: [String])
        /// The kind is not a valid kind name.
        case invalidKind(String)
        /// The value cannot be an identifier of its kind (`reason` says why).
        case invalidValue(Identifier, reason: String)

        /// What went wrong, in one line for a person; nil for `found`.
        public var message: String? {
            switch self {
            case .found:
                return nil
            case .hub(let identifier, let threshold):
                return
                    "\(Self.shown(identifier)) is a hub: it was seen with more than \(threshold) distinct identifiers of one kind, "
                    + "so it is shared by many people and identifies no one profile; look the person up by another identifier"
            case .notFound(let identifier, let problem):
                var message = "no profile has the identifier \(Self.shown(identifier))"
                if let problem { message += " (it would be ignored: \(problem.replacingOccurrences(of: "_", with: " ")))" }
                return message
            case .unknownKind(let kind, let known):
                return
                    "'\(kind)' is not an identifier kind in use or configured; known kinds are \(known.joined(separator: ", "))"
            case .invalidKind(let kind):
                return
                    "'\(kind.prefix(100))' is not a valid identifier kind (lower-case letters, digits and _, starting with a letter, at most 63)"
            case .invalidValue(let identifier, let reason):
                return "'\(identifier.value.prefix(100))' cannot be a \(identifier.kind): \(reason)"
            }
        }

        static func shown(_ identifier: Identifier) -> String {
            identifier.value.count > 100 ? "\(identifier.kind):\(identifier.value.prefix(100))…" : identifier.description
        }
    }

    /// Checks an event count asked for: 0 through ``maxEvents``.
    public static func validEventCount(_ events: Int) -> Bool { (0...maxEvents).contains(events) }

    /// The document of the profile holding `kind:value`, with its newest `events` events; or why there is none.
    ///
    /// The value is normalized as the identity stage normalizes identifiers (`Alice@Example.COM ` finds
    /// `alice@example.com`). Kind `profile_id` takes a profile id; one merged away gives the profile it went into.
    ///
    /// - Parameter events: how many of the newest events to include, 0 or more (the API and the CLI allow at most
    ///   ``maxEvents``; a negative count is an error from PostgreSQL).
    public func lookup(kind: String, value: String, events: Int) async throws -> Lookup {
        // PostgreSQL text cannot hold NUL, and no identifier does (control characters are refused).
        if kind.utf8.contains(0) { return .invalidKind(kind.replacingOccurrences(of: "\0", with: "\\0")) }
        if value.utf8.contains(0) {
            return .invalidValue(
                Identifier(kind: kind, value: value.replacingOccurrences(of: "\0", with: "\\0")),
                reason: "it contains a NUL character")
        }
        let query: PostgresQuery =
            "SELECT outcome, document FROM cdp.profile_lookup(\(kind)::text, \(value)::text, \(events)::int)"
        let (outcome, document) = try await ReadReplica.read(replica, primary: client) {
            try await $0.query(query)[0].decode((String, String?).self)
        }
        return try Self.lookup(outcome: outcome, document: document, kind: kind, value: value)
    }

    /// Turns a row of `cdp.profile_lookup` into a ``Lookup``.
    static func lookup(outcome: String, document: String?, kind: String, value: String) throws -> Lookup {
        if outcome == "found" {
            guard let document else {
                throw PostgresError(.decoding, "cdp.profile_lookup found a profile but returned no document")
            }
            return .found(document: document)
        }
        // Every other outcome's document is a small object of details.
        let details = document.flatMap { try? JSONParser.parse(Array($0.utf8)) }
        func text(_ key: String) -> String? {
            if case .string(let text)? = details?[key] { return text }
            return nil
        }
        switch outcome {
        case "hub":
            var threshold = 0
            if case .number(let number)? = details?["hub_threshold"] { threshold = Int(number) ?? 0 }
            return .hub(Identifier(kind: kind, value: text("value") ?? value), threshold: threshold)
        case "not_found":
            return .notFound(Identifier(kind: kind, value: text("value") ?? value), problem: text("problem"))
        case "unknown_kind":
            var known: [String] = []
            if case .array(let items)? = details?["known_kinds"] {
                known = items.compactMap { if case .string(let kind) = $0 { kind } else { nil } }
            }
            return .unknownKind(kind, known: known)
        case "invalid_kind":
            return .invalidKind(kind)
        case "invalid_value":
            return .invalidValue(Identifier(kind: kind, value: value), reason: "a profile id is a UUID")
        default:
            throw PostgresError(.decoding, "cdp.profile_lookup returned the unknown outcome '\(outcome)'")
        }
    }
}

extension JSONValue {
    /// The value as indented JSON text (two spaces), members in their order.
    public var prettyPrinted: String {
        var out: [UInt8] = []
        writePretty(to: &out, indent: 0)
        return String(decoding: out, as: UTF8.self)
    }

    private func writePretty(to out: inout [UInt8], indent: Int) {
        func newline(_ level: Int) {
            out.append(UInt8(ascii: "\n"))
            out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: level * 2))
        }
        switch self {
        case .array(let values) where !values.isEmpty:
            out.append(UInt8(ascii: "["))
            for (index, value) in values.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                newline(indent + 1)
                value.writePretty(to: &out, indent: indent + 1)
            }
            newline(indent)
            out.append(UInt8(ascii: "]"))
        case .object(let members) where !members.isEmpty:
            out.append(UInt8(ascii: "{"))
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                newline(indent + 1)
                Self.writeString(key, to: &out)
                out.append(contentsOf: ": ".utf8)
                value.writePretty(to: &out, indent: indent + 1)
            }
            newline(indent)
            out.append(UInt8(ascii: "}"))
        default:
            write(to: &out)
        }
    }
}
