import Foundation
import Postgres

/// A reverse-ETL sync: rows of a source (a segment, a view or table, or an analyst's query) delivered to a
/// destination, sending only what changed since the last delivery.
///
/// Kept in a JSON file in git and applied with `tributary syncs apply FILE`:
///
/// ```json
/// {"syncs": [{
///   "name": "vip_to_crm",
///   "source": {"segment": "vip"},                 // or {"relation": "analytics.customers"} or {"query": "SELECT …"}
///   "primaryKey": ["profile_id"],
///   "fields": {"email": "email", "ltv": "lifetime_value",    // destination field → source column (default: all)
///              "email_sha256": {"column": "email", "transform": "hash_email"}},   // or hash, hash_phone, mask
///   "purposes": ["Marketing"],                    // consent purposes the sync serves (profileColumn: "profile_id")
///   "mode": "mirror",                             // upsert | update | insert | mirror | audience
///   "destination": {"type": "webhook", "url": "https://example.com/hook", "secret": "env:HOOK_SECRET"},
///   "schedule": {"every": "15m"},                 // or {"cron": "*/15 * * * *"}; none: only `syncs run`
///   "batchSize": 500, "rateLimit": {"requestsPerSecond": 10}, "maxAttempts": 5,
///   "rowHistoryDays": 14,                         // how long each run's rows and their outcomes are kept (0: not kept)
///   "realtime": false                             // true: follow a real-time segment's entries and exits as they happen
/// }]}
/// ```
public struct SyncDefinition: Sendable, Equatable {
    public enum Source: Sendable, Equatable {
        /// The view `segments."name"`.
        case segment(String)
        /// A view or table, optionally schema-qualified (`analytics.customers`).
        case relation(schema: String?, name: String)
        /// A SELECT an analyst wrote; run read-only.
        case query(String)
    }

    public enum Mode: String, Sendable, CaseIterable {
        /// Added and changed rows are upserted; rows gone from the source are left at the destination.
        case upsert
        /// Added and changed rows are sent as updates of existing records.
        case update
        /// Added rows are inserted, once; changes are not sent.
        case insert
        /// Added and changed rows are upserted, rows gone from the source are deleted.
        case mirror
        /// Added rows join the audience, rows gone from the source leave it; changed rows are sent again as joins.
        case audience
    }

    public enum Schedule: Sendable, Equatable {
        /// Only when run by hand (`tributary syncs run NAME`).
        case manual
        case every(seconds: Int)
        case cron(CronSchedule)

        /// The next run after `date` (nil: manual).
        public func next(after date: Date) -> Date? {
            switch self {
            case .manual: nil
            case .every(let seconds): date.addingTimeInterval(Double(seconds))
            case .cron(let cron): cron.next(after: date)
            }
        }
    }

    /// How a field's value is protected before it leaves: hashed (SHA-256 in hex of the normalized value,
    /// `cdp.pii_hash`) or masked (`cdp.pii_mask`). NULL stays NULL.
    public enum FieldTransform: String, Sendable, CaseIterable {
        /// Trimmed and lower-cased, then SHA-256.
        case hash
        /// An email, trimmed and lower-cased, then SHA-256 (what ad platforms match on).
        case hashEmail = "hash_email"
        /// A phone number reduced to its digits, then SHA-256.
        case hashPhone = "hash_phone"
        /// `j***@example.com`, or all but the last four characters as `*`.
        case mask
    }

    /// A destination field: the source column it comes from and how it is protected.
    public struct Field: Sendable, Equatable {
        public var name: String
        public var column: String
        public var transform: FieldTransform?
    }

    public var name: String
    public var source: Source
    public var primaryKey: [String]
    /// Destination fields in file order; nil: every column of the source, as is.
    public var fields: [Field]?
    /// Consent purposes the sync serves: only profiles that granted all of them are sent, and a profile that
    /// withdraws one is removed at the destination. Empty: the sync does not depend on consent.
    public var purposes: [String]
    /// The source column holding the profile id consent is looked up by (used when `purposes` is not empty).
    public var profileColumn: String
    /// Follows its (real-time) segment's entries and exits as the profile stage records them, delivering each within
    /// moments (`tributary worker`); its source is the segment's members as `cdp.segment_members` holds them.
    public var realtime: Bool
    public var mode: Mode
    /// The `destination` object as written (its `type` picks the destination).
    public var destination: JSONValue
    public var schedule: Schedule
    public var batchSize: Int
    /// Requests per second to the destination (nil: as fast as it answers).
    public var requestsPerSecond: Double?
    /// Tries per batch before the run gives up (the first try included).
    public var maxAttempts: Int
    /// Days each run's rows and their outcomes are kept in `cdp.sync_run_rows` (0: not recorded).
    public var rowHistoryDays: Int
    public var enabled: Bool
    /// The definition as written in the file (stored, shown by `syncs show`).
    public var document: JSONValue

    public static func == (lhs: SyncDefinition, rhs: SyncDefinition) -> Bool { lhs.document == rhs.document }

    /// The operation a change of this kind becomes in this mode (nil: not sent).
    public func operation(for change: DiffKind) -> SyncOperation? {
        switch (mode, change) {
        case (.upsert, .added), (.upsert, .changed), (.mirror, .added), (.mirror, .changed): .upsert
        case (.update, .added), (.update, .changed): .update
        case (.insert, .added): .insert
        case (.mirror, .removed): .delete
        case (.audience, .added), (.audience, .changed): .add
        case (.audience, .removed), (.audience, .withdrawn): .remove
        case (_, .withdrawn): .delete
        default: nil
        }
    }

    /// Whether rows gone from the source are looked for at all.
    package var tracksRemovals: Bool { mode == .mirror || mode == .audience }
}

/// How a row of the source differs from what was last delivered.
public enum DiffKind: String, Sendable {
    case added, changed, removed
    /// Still in the source, but the profile no longer consents to one of the sync's purposes: removed at the
    /// destination in every mode.
    case withdrawn
}

/// The syncs file: `{"syncs": [...]}`.
public struct SyncDefinitions: Sendable, Equatable {
    public var syncs: [SyncDefinition]

    public init(_ syncs: [SyncDefinition]) { self.syncs = syncs }

    public subscript(name: String) -> SyncDefinition? { syncs.first { $0.name == name } }

    /// Reads a syncs file; errors give the path of the problem (`syncs[1].schedule.every: …`). Destination settings are
    /// checked by `registry`.
    public static func parse(_ data: Data, registry: DestinationRegistry) throws -> SyncDefinitions {
        let document: JSONValue
        do { document = try JSONParser.parse([UInt8](data)) } catch { throw SyncError("(document): not valid JSON (\(error))") }
        guard case .object(let top) = document else { throw SyncError("(document): must be a JSON object with \"syncs\"") }
        if let unknown = top.first(where: { $0.0 != "syncs" }) {
            throw SyncError("\(unknown.0): unknown key; known keys are syncs")
        }
        guard case .array(let items)? = document["syncs"] else { throw SyncError("syncs: required, a list") }
        var syncs: [SyncDefinition] = []
        var names: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            let path = "syncs[\(index)]"
            let sync = try parseSync(item, at: path, registry: registry)
            if let earlier = names[sync.name] {
                throw SyncError("\(path).name: '\(sync.name)' is already the name of syncs[\(earlier)]")
            }
            names[sync.name] = index
            syncs.append(sync)
        }
        return SyncDefinitions(syncs)
    }

    static let keys = [
        "name", "source", "primaryKey", "fields", "mode", "destination", "schedule", "batchSize", "rateLimit",
        "maxAttempts", "enabled", "description", "purposes", "profileColumn", "realtime", "rowHistoryDays",
    ]

    /// A definition as `cdp.syncs.definition` stores it (the JSON text `syncs apply` wrote), decoded the way a syncs
    /// file is: the one reader of stored syncs. Errors name the sync.
    public static func stored(_ text: String, name: String, registry: DestinationRegistry) throws -> SyncDefinition {
        try parseSync(try JSONParser.parse(Array(text.utf8)), at: "sync '\(name)'", registry: registry)
    }

    package static func parseSync(_ value: JSONValue, at path: String, registry: DestinationRegistry) throws -> SyncDefinition {
        guard case .object(let members) = value else { throw SyncError("\(path): must be an object") }
        if let unknown = members.first(where: { !keys.contains($0.0) }) {
            throw SyncError("\(path).\(unknown.0): unknown key; known keys are \(keys.joined(separator: ", "))")
        }
        func string(_ key: String, _ value: JSONValue?) throws -> String {
            guard case .string(let text)? = value else { throw SyncError("\(path).\(key): required, a string") }
            if text.isEmpty || text.utf8.contains(0) { throw SyncError("\(path).\(key): must not be empty or contain NUL") }
            return text
        }
        func integer(_ key: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
            guard let raw = value[key], raw != .null else { return fallback }
            guard case .number(let text) = raw, let number = Int(text), range.contains(number) else {
                throw SyncError("\(path).\(key): must be a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return number
        }
        let name = try string("name", value["name"])
        if name.utf8.count > SQLNames.maxBytes { throw SyncError("\(path).name: at most \(SQLNames.maxBytes) bytes") }

        let source: SyncDefinition.Source
        guard case .object(let sourceMembers)? = value["source"], sourceMembers.count == 1,
            let (kind, sourceValue) = sourceMembers.first
        else {
            throw SyncError("\(path).source: required, an object with one of segment, relation, query")
        }
        switch kind {
        case "segment": source = .segment(try string("source.segment", sourceValue))
        case "relation":
            let text = try string("source.relation", sourceValue)
            let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            if parts.contains(where: \.isEmpty) {
                throw SyncError("\(path).source.relation: '\(text)' is not NAME or SCHEMA.NAME")
            }
            source = parts.count == 2 ? .relation(schema: parts[0], name: parts[1]) : .relation(schema: nil, name: parts[0])
        case "query":
            let text = try string("source.query", sourceValue)
            if text.contains(";") && text.trimmingCharacters(in: .whitespacesAndNewlines).dropLast().contains(";") {
                throw SyncError("\(path).source.query: one SELECT only (no ';' inside)")
            }
            source = .query(text.trimmingCharacters(in: CharacterSet(charactersIn: "; \n\t")))
        default:
            throw SyncError("\(path).source.\(kind): unknown source; use segment, relation or query")
        }

        guard case .array(let keyItems)? = value["primaryKey"], !keyItems.isEmpty else {
            throw SyncError("\(path).primaryKey: required, a list of at least one column")
        }
        let primaryKey = try keyItems.enumerated().map { try string("primaryKey[\($0.offset)]", $0.element) }
        if Set(primaryKey).count != primaryKey.count { throw SyncError("\(path).primaryKey: a column is listed twice") }

        var fields: [SyncDefinition.Field]?
        if let raw = value["fields"], raw != .null {
            guard case .object(let mapping) = raw, !mapping.isEmpty else {
                throw SyncError("\(path).fields: an object of destination field → source column, not empty")
            }
            var seen = Set<String>()
            fields = try mapping.map { field, spec in
                if !seen.insert(field).inserted { throw SyncError("\(path).fields.\(field): given twice") }
                if field.isEmpty || field.utf8.contains(0) {
                    throw SyncError("\(path).fields: a field name must not be empty or contain NUL")
                }
                guard case .object(let members) = spec else {
                    return SyncDefinition.Field(name: field, column: try string("fields.\(field)", spec), transform: nil)
                }
                if let unknown = members.first(where: { $0.0 != "column" && $0.0 != "transform" }) {
                    throw SyncError("\(path).fields.\(field).\(unknown.0): unknown key; known keys are column, transform")
                }
                var transform: SyncDefinition.FieldTransform?
                switch spec["transform"] {
                case nil, .null?: transform = nil
                case .string(let text)?:
                    guard let known = SyncDefinition.FieldTransform(rawValue: text) else {
                        throw SyncError(
                            "\(path).fields.\(field).transform: unknown transform '\(text)'; use "
                                + SyncDefinition.FieldTransform.allCases.map(\.rawValue).joined(separator: ", "))
                    }
                    transform = known
                default: throw SyncError("\(path).fields.\(field).transform: must be a string")
                }
                return SyncDefinition.Field(
                    name: field, column: try string("fields.\(field).column", spec["column"]), transform: transform)
            }
        }

        var purposes: [String] = []
        if let raw = value["purposes"], raw != .null {
            guard case .array(let items) = raw else { throw SyncError("\(path).purposes: a list of consent purposes") }
            purposes = try items.enumerated().map { try string("purposes[\($0.offset)]", $0.element) }
            if Set(purposes).count != purposes.count { throw SyncError("\(path).purposes: a purpose is listed twice") }
        }
        let profileColumn = value["profileColumn"] == nil ? "profile_id" : try string("profileColumn", value["profileColumn"])

        let mode: SyncDefinition.Mode
        switch value["mode"] {
        case nil, .null?: mode = .upsert
        case .string(let text)?:
            guard let known = SyncDefinition.Mode(rawValue: text) else {
                throw SyncError(
                    "\(path).mode: unknown mode '\(text)'; use \(SyncDefinition.Mode.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            mode = known
        default: throw SyncError("\(path).mode: must be a string")
        }

        guard let destination = value["destination"], case .object = destination else {
            throw SyncError("\(path).destination: required, an object with \"type\"")
        }
        do { try registry.validate(destination) } catch let error as SyncError { throw SyncError("\(path).\(error.description)") }

        let schedule: SyncDefinition.Schedule
        switch value["schedule"] {
        case nil, .null?: schedule = .manual
        case .object(let entries)? where entries.count == 1:
            switch entries[0] {
            case ("every", .string(let text)):
                guard let seconds = parseDuration(text), seconds >= 10 else {
                    throw SyncError("\(path).schedule.every: '\(text)' is not a duration of at least 10s (like 30s, 15m, 6h, 1d)")
                }
                schedule = .every(seconds: seconds)
            case ("cron", .string(let text)):
                do { schedule = .cron(try CronSchedule(text)) } catch let error as SyncError {
                    throw SyncError("\(path).schedule.cron: \(error.description)")
                }
            default: throw SyncError("\(path).schedule: {\"every\": \"15m\"} or {\"cron\": \"*/15 * * * *\"}")
            }
        default: throw SyncError("\(path).schedule: {\"every\": \"15m\"} or {\"cron\": \"*/15 * * * *\"}")
        }

        var requestsPerSecond: Double?
        if let raw = value["rateLimit"], raw != .null {
            guard case .number(let text)? = raw["requestsPerSecond"], let rate = Double(text), rate > 0, rate <= 10_000 else {
                throw SyncError("\(path).rateLimit.requestsPerSecond: required, a number above 0 and at most 10000")
            }
            requestsPerSecond = rate
        }
        func flag(_ key: String, default fallback: Bool) throws -> Bool {
            switch value[key] {
            case nil, .null?: return fallback
            case .bool(let flag)?: return flag
            default: throw SyncError("\(path).\(key): must be true or false")
            }
        }
        let enabled = try flag("enabled", default: true)
        let realtime = try flag("realtime", default: false)
        if realtime {
            guard case .segment = source else { throw SyncError("\(path).realtime: a real-time sync's source must be a segment") }
            guard primaryKey == ["profile_id"] else {
                throw SyncError("\(path).primaryKey: a real-time sync is keyed by [\"profile_id\"]")
            }
        }
        let sync = SyncDefinition(
            name: name, source: source, primaryKey: primaryKey, fields: fields, purposes: purposes, profileColumn: profileColumn,
            realtime: realtime, mode: mode, destination: destination,
            schedule: schedule, batchSize: try integer("batchSize", default: 500, in: 1...100_000),
            requestsPerSecond: requestsPerSecond, maxAttempts: try integer("maxAttempts", default: 5, in: 1...20),
            rowHistoryDays: try integer("rowHistoryDays", default: 14, in: 0...3650), enabled: enabled, document: value)
        do { try registry.validate(sync: sync) } catch let error as SyncError { throw SyncError("\(path).\(error.description)") }
        return sync
    }

    /// `30s`, `15m`, `6h`, `1d` (or a bare number of seconds) in seconds.
    static func parseDuration(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let seconds = Int(text) { return seconds }
        guard let unit = text.last.flatMap({ units[$0] }), let number = Int(text.dropLast()), number > 0 else { return nil }
        return number * unit
    }
}

/// A five-field cron schedule (`minute hour day-of-month month day-of-week`, UTC), with `*`, lists, ranges and steps:
/// `*/15 * * * *`, `0 6 * * 1-5`, `30 2 1,15 * *`. Day of week 0 or 7 is Sunday. When both day fields are restricted,
/// either matching is enough (as in cron).
public struct CronSchedule: Sendable, Equatable {
    public let text: String
    let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let daysRestricted: Bool, weekdaysRestricted: Bool

    public init(_ text: String) throws {
        let fields = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard fields.count == 5 else {
            throw SyncError("'\(text)' needs five fields: minute hour day-of-month month day-of-week")
        }
        self.text = text
        minutes = try Self.field(fields[0], 0...59, "minute")
        hours = try Self.field(fields[1], 0...23, "hour")
        days = try Self.field(fields[2], 1...31, "day of month")
        months = try Self.field(fields[3], 1...12, "month")
        weekdays = Set(try Self.field(fields[4], 0...7, "day of week").map { $0 % 7 })
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    static func field(_ text: String, _ range: ClosedRange<Int>, _ name: String) throws -> Set<Int> {
        var values = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw SyncError("\(name) '\(part)' is not valid") }
            var step = 1
            if pieces.count == 2 {
                guard let value = Int(pieces[1]), value > 0 else {
                    throw SyncError("\(name) step '\(pieces[1])' must be a positive number")
                }
                step = value
            }
            var low = range.lowerBound, high = range.upperBound
            if pieces[0] != "*" {
                let bounds = pieces[0].split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let first = Int(bounds[0]), let last = Int(bounds.last!),
                    range.contains(first), range.contains(last), first <= last
                else {
                    throw SyncError("\(name) '\(part)' must be \(range.lowerBound)–\(range.upperBound), a range or *")
                }
                low = first
                high = bounds.count == 2 || pieces.count == 2 ? last : first
                if pieces.count == 2 && bounds.count == 1 { high = range.upperBound }
            }
            values.formUnion(stride(from: low, through: high, by: step))
        }
        return values
    }

    /// The first matching minute strictly after `date` (UTC), within about four years; nil if none (`0 0 30 2 *`).
    public func next(after date: Date) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        var minute = calendar.date(bySetting: .second, value: 0, of: date.addingTimeInterval(60)) ?? date
        if minute <= date { minute = minute.addingTimeInterval(60) }
        let limit = date.addingTimeInterval(4 * 366 * 86_400)
        while minute < limit {
            let parts = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: minute)
            let (m, h, d, mo, wd) = (parts.minute!, parts.hour!, parts.day!, parts.month!, parts.weekday! - 1)
            guard months.contains(mo) else {
                minute = calendar.date(from: DateComponents(year: calendar.component(.year, from: minute), month: mo, day: 1))!
                    .addingTimeInterval(0)
                minute = calendar.date(byAdding: .month, value: 1, to: minute)!
                continue
            }
            let dayMatches =
                daysRestricted && weekdaysRestricted
                ? days.contains(d) || weekdays.contains(wd)
                : days.contains(d) && weekdays.contains(wd)
            guard dayMatches else {
                minute = calendar.startOfDay(for: minute).addingTimeInterval(86_400)
                continue
            }
            guard hours.contains(h) else {
                minute = minute.addingTimeInterval(Double(60 - m) * 60)
                continue
            }
            if minutes.contains(m) { return minute }
            minute = minute.addingTimeInterval(60)
        }
        return nil
    }
}
