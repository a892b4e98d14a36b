import Foundation
import Postgres
import TributaryModel

/// Infers a ``Catalog`` from the most recent events, in one set-based query (`jsonb_each` and `jsonb_typeof` over
/// a sample; no event is loaded into Swift, only one row per key and JSON type).
///
/// What is sampled:
/// - traits: the top-level keys of identify calls' `traits` and of every call's `context.traits`;
/// - properties: the top-level keys of `properties`, per event: track calls by their `event`, page calls as
///   `$page` and screen calls as `$screen`.
///
/// How a key's type is chosen, ignoring JSON `null` values:
/// - its values are grouped by JSON type, and the most frequent JSON type wins (a tie goes to the first in
///   alphabetical order: array, boolean, number, object, string);
/// - numbers are `integer` if every sampled number is integral as written and fits in 64 bits (`10` or `1e3`, but not
///   `10.5`, nor `10.0`, whose decimal PostgreSQL keeps), otherwise `double`, so a mix of integers and doubles is
///   `double`;
/// - strings are `timestamp` if every sampled string is an ISO-8601 date-time (``timestampPattern``), otherwise `string`.
///
/// Keys that look like personal data (``looksLikePII(_:)``) are marked `pii` on traits. Every trait gets an explicit,
/// distinct `column`. Events seen without properties are catalogued too; empty keys and event names are skipped.
public enum CatalogInference {
    /// How many of the most recent events (by receive order) `infer` samples unless told otherwise.
    public static let defaultSample = 100_000

    /// An ISO-8601 date-time as SDKs send it (PostgreSQL regular expression): a date, `T` or a space, hours and minutes,
    /// optional seconds and fraction, an optional `Z` or offset. A date alone is not a date-time.
    public static let timestampPattern =
        #"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?([Zz]|[+-]([01]\d|2[0-3])(:?[0-5]\d)?)?$"#

    /// Samples the `sample` most recent events of `cdp.events` and infers the type of every trait and property.
    public static func infer(client: PostgresClient, sample: Int = defaultSample) async throws -> Catalog {
        guard sample >= 1 else { throw CatalogError("sample: must be at least 1, got \(sample)") }
        let rows = try await client.query(
            """
            WITH sample AS MATERIALIZED (
                SELECT type, properties, traits, context,
                       CASE type WHEN 'track' THEN event WHEN 'page' THEN \(Catalog.pageEvent) WHEN 'screen' THEN \(Catalog.screenEvent) END
                           AS event_name
                FROM cdp.events ORDER BY seq DESC LIMIT \(sample)
            ), entries AS (
                SELECT true AS is_trait, NULL::text AS event, t.key, t.value
                FROM sample, jsonb_each(CASE WHEN type = 'identify' AND jsonb_typeof(traits) = 'object' THEN traits END) t
                UNION ALL
                SELECT true, NULL, t.key, t.value
                FROM sample, jsonb_each(CASE WHEN jsonb_typeof(context -> 'traits') = 'object' THEN context -> 'traits' END) t
                UNION ALL
                SELECT false, event_name, p.key, p.value
                FROM sample, jsonb_each(CASE WHEN jsonb_typeof(properties) = 'object' THEN properties END) p
                WHERE event_name <> ''
            ), per_json_type AS (
                SELECT is_trait, event, key, jsonb_typeof(value) AS json_type, count(*) AS n,
                       bool_and(CASE WHEN jsonb_typeof(value) = 'number' THEN scale(value::numeric) = 0
                                     AND value::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 END) AS integral,
                       bool_and(CASE WHEN jsonb_typeof(value) = 'string' THEN (value #>> '{}') ~ \(timestampPattern) END) AS timestamps
                FROM entries
                WHERE jsonb_typeof(value) <> 'null' AND key <> ''
                GROUP BY is_trait, event, key, jsonb_typeof(value)
            ), chosen AS (
                SELECT DISTINCT ON (is_trait, event, key) is_trait, event, key,
                       CASE json_type WHEN 'number' THEN CASE WHEN integral THEN 'integer' ELSE 'double' END
                                      WHEN 'string' THEN CASE WHEN timestamps THEN 'timestamp' ELSE 'string' END
                                      ELSE json_type END AS type
                FROM per_json_type
                ORDER BY is_trait, event, key, n DESC, json_type
            )
            SELECT is_trait, event, key, type FROM chosen
            UNION ALL
            -- Events without properties are catalogued too.
            SELECT DISTINCT false, event_name, NULL, NULL FROM sample WHERE event_name <> ''
            """)
        var traits: [String: Catalog.FieldSpec] = [:]
        var events: [String: Catalog.EventSpec] = [:]
        for row in rows {
            let (isTrait, event, key, typeName) = try row.decode((Bool, String?, String?, String?).self)
            if isTrait, let key, let typeName {
                traits[key] = Catalog.FieldSpec(type: try valueType(typeName), pii: looksLikePII(key) ? true : nil)
            } else if let event {
                var spec = events[event] ?? Catalog.EventSpec()
                if let key, let typeName { spec.properties[key] = Catalog.FieldSpec(type: try valueType(typeName)) }
                events[event] = spec
            }
        }
        return Catalog(events: events).adding(traits: traits)
    }

    private static func valueType(_ name: String) throws -> ValueType {
        guard let type = ValueType(rawValue: name) else { throw CatalogError("inference produced an unknown type '\(name)'") }
        return type
    }

    /// Words that mark a key as personal data wherever they appear in it (`email`, `billing_address`, `mobilePhone`).
    static let piiWords: Set<String> = [
        "email", "mail", "phone", "mobile", "address", "street", "ssn", "passport", "birthday", "dob",
    ]
    /// Keys that are personal data as a whole (compared by their words joined with `_`).
    static let piiKeys: Set<String> = [
        "name", "first_name", "last_name", "full_name", "middle_name", "given_name", "family_name", "surname", "firstname",
        "lastname", "fullname", "username", "user_name", "birth_date", "date_of_birth", "zip", "zip_code", "zipcode",
        "postal_code", "postcode", "ip", "ip_address", "social_security_number", "tax_id", "national_id", "iban",
    ]

    /// Whether a key obviously names personal data: an email address, a phone number, a name, a postal address, a
    /// date of birth, a national identifier. Case, separators and camel case do not matter (`firstName`, `First Name`).
    public static func looksLikePII(_ key: String) -> Bool {
        let words = CatalogNames.words(key).map { $0.lowercased() }
        return piiKeys.contains(words.joined(separator: "_")) || words.contains(where: piiWords.contains)
    }
}

extension Catalog {
    /// A freshly inferred catalog (`self`) merged into an `existing` one, such as the file the user has edited:
    /// every trait, event and property of `existing` is kept exactly as it is (its type, column, description, pii
    /// win), and the ones only `self` has are added; added traits get columns no existing trait uses.
    public func merged(keeping existing: Catalog) -> Catalog {
        var result = existing.adding(traits: traits)
        for (name, event) in events {
            var kept = result.events[name] ?? EventSpec()
            for (key, property) in event.properties where kept.properties[key] == nil { kept.properties[key] = property }
            result.events[name] = kept
        }
        return result
    }

    /// This catalog plus the `traits` it does not have yet (in key order), each given an explicit column: its own
    /// `column` or the one derived from its key, with `_2`, `_3`, ... appended while that is reserved or taken.
    func adding(traits added: [String: FieldSpec]) -> Catalog {
        var result = self
        var taken = Set(Self.reservedColumns + traits.keys.compactMap(columnName(forTrait:)))
        for key in added.keys.sorted() where traits[key] == nil {
            var spec = added[key]!
            let base = spec.column ?? CatalogNames.column(forKey: key)
            var column = base
            var suffix = 1
            while taken.contains(column) {
                suffix += 1
                column = String(base.prefix(Self.maxColumnBytes - "_\(suffix)".utf8.count)) + "_\(suffix)"
            }
            taken.insert(column)
            spec.column = column
            result.traits[key] = spec
        }
        return result
    }
}
