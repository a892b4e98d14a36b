import Foundation
import Postgres
import Testing
@testable import TributaryModel

/// The exact SQL of a sync's diff, without a database: every name quoted in one place, consent and restriction
/// clauses where they belong, the hash seeded by the mapping.
@Suite struct SyncDiffSQLTests {
    /// A registry that knows a `test` destination (never built here).
    static var registry: DestinationRegistry {
        var registry = DestinationRegistry()
        registry.register("test") { _ in throw SyncError("not built in unit tests") }
        return registry
    }

    static func sync(_ json: String) throws -> SyncDefinition {
        try SyncDefinitions.parse(Data(#"{"syncs": [\#(json)]}"#.utf8), registry: registry).syncs[0]
    }

    @Test func aSegmentSourceIsKeyedHashedAndFilteredForNullKeys() throws {
        let sync = try Self.sync(
            #"{"name": "vip", "source": {"segment": "vip"}, "primaryKey": ["profile_id"], "mode": "upsert", "destination": {"type": "test"}}"#
        )
        let diff = SyncDiff(sync)
        #expect(try diff.sourceSQL() == #"SELECT * FROM "segments"."vip""#)
        #expect(
            try diff.keyedSourceSQL() == """
                SELECT jsonb_build_array(s."profile_id")::text AS key, hash_record_extended(s, 0) AS hash,
                       true AS consented, s AS r
                FROM (SELECT * FROM "segments"."vip") AS s
                WHERE s."profile_id" IS NOT NULL
                """)
        let (key, payload) = try diff.jsonSQL()
        #expect(key == #"jsonb_build_object('profile_id', (src.r)."profile_id")"#)
        #expect(payload == "to_jsonb(src.r)")
    }

    @Test func hostileNamesAreQuotedAndPurposesBecomeAConsentJoin() throws {
        let sync = try Self.sync(
            #"""
            {"name": "odd", "source": {"relation": "public.we\"ird; --"}, "primaryKey": ["id\"x"], "mode": "mirror",
             "purposes": ["Marketing", "it's"], "profileColumn": "p'id",
             "fields": {"e\"mail": "e-mail", "h": {"column": "phone", "transform": "hash_phone"}},
             "destination": {"type": "test"}}
            """#)
        let diff = SyncDiff(sync)
        let keyed = try diff.keyedSourceSQL()
        #expect(keyed.contains(#"FROM (SELECT * FROM "public"."we""ird; --") AS s"#), "\(keyed)")
        #expect(keyed.contains(#"jsonb_build_array(s."id""x")::text AS key"#))
        #expect(keyed.contains(#"ROW(s."e-mail", s."phone")"#))
        #expect(keyed.contains("purpose IN ('Marketing', 'it''s')") && keyed.contains("HAVING count(*) = 2"))
        #expect(keyed.contains(#"AS c ON c.profile_id = s."p'id"::uuid"#))
        #expect(keyed.contains("c.profile_id IS NOT NULL AS consented"))
        let (_, payload) = try diff.jsonSQL()
        #expect(
            payload
                == #"jsonb_build_object('e"mail', (src.r)."e-mail", 'h', cdp.pii_hash(to_jsonb((src.r)."phone") #>> '{}', 'phone'))"#
        )
    }

    @Test func theMappingSeedsTheHashSoChangingItResendsEverything() throws {
        func seed(_ fields: String) throws -> Int64 {
            try SyncDiff(
                Self.sync(
                    #"{"name": "s", "source": {"segment": "v"}, "primaryKey": ["profile_id"], "mode": "upsert", "fields": \#(fields), "destination": {"type": "test"}}"#
                )
            ).hashSeed
        }
        let plain = try seed(#"{"email": "email"}"#)
        #expect(plain != 0)
        #expect(try seed(#"{"email": "email"}"#) == plain)
        #expect(try seed(#"{"email": {"column": "email", "transform": "hash_email"}}"#) != plain)
        #expect(try seed(#"{"mail": "email"}"#) != plain)
    }

    @Test func overFortyFieldsAreBuiltInChunks() throws {
        let fields = (0..<85).map { #""f\#($0)": "c\#($0)""# }.joined(separator: ", ")
        let sync = try Self.sync(
            #"{"name": "wide", "source": {"segment": "v"}, "primaryKey": ["profile_id"], "mode": "upsert", "fields": {\#(fields)}, "destination": {"type": "test"}}"#
        )
        let (_, payload) = try SyncDiff(sync).jsonSQL()
        // jsonb_build_object takes at most 100 arguments: 40 pairs per call.
        #expect(payload.components(separatedBy: "jsonb_build_object(").count - 1 == 3)
        #expect(payload.components(separatedBy: " || ").count == 3)
    }

    /// A replay's diff compares only the given keys: in the source, the state and the pending changes.
    @Test func aKeyedDiffReadsOnlyThoseKeys() throws {
        let sync = try Self.sync(
            #"{"name": "k", "source": {"relation": "customers"}, "primaryKey": ["id", "region"], "mode": "mirror", "destination": {"type": "test"}}"#
        )
        let diff = SyncDiff(sync, keyed: true)
        #expect(
            try diff.keyedSourceSQL().hasSuffix(
                """
                WHERE s."id" IS NOT NULL AND s."region" IS NOT NULL
                  AND jsonb_build_array(s."id", s."region")::text = ANY($2::text[])
                """))
        let sql = try diff.insertSQL()
        #expect(sql.components(separatedBy: "WHERE sync = $1 AND key = ANY($2::text[])").count - 1 == 2)
        let statement = try diff.insertStatement(profiles: [], keys: [#"["a", "eu"]"#])
        #expect(statement.binds.count == 2 && statement.sql == sql)
        #expect(!(try SyncDiff(sync).insertSQL()).contains("$2"))
    }

    @Test func aRestrictedRealTimeDiffReadsOnlyThoseProfilesState() throws {
        let sync = try Self.sync(
            #"{"name": "rt", "source": {"segment": "v"}, "primaryKey": ["profile_id"], "mode": "audience", "realtime": true, "destination": {"type": "test"}}"#
        )
        let members =
            "SELECT p.profile_id FROM cdp.segment_members AS m JOIN cdp.profile_data AS p ON p.profile_id = m.profile_id"
        let full = try SyncDiff(sync, membersSQL: members).insertSQL()
        let restricted = try SyncDiff(sync, membersSQL: members, restricted: true).insertSQL()
        #expect(!full.contains("$2"))
        #expect(restricted.contains("SELECT * FROM (\(members)) AS m WHERE m.profile_id = ANY($2::uuid[])"))
        #expect(
            restricted.components(
                separatedBy: "AND key = ANY(ARRAY(SELECT jsonb_build_array(x)::text FROM unnest($2::uuid[]) AS x))"
            )
            .count - 1 == 2)
        // The statement binds what the text numbers: the name, then the profiles.
        let profile = UUID()
        let statement = try SyncDiff(sync, membersSQL: members, restricted: true).insertStatement(profiles: [profile])
        #expect(statement.sql == restricted && statement.binds.count == 2)
        #expect(statement.binds[0].bytes == Array("rt".utf8))
        #expect(try SyncDiff(sync, membersSQL: members).insertStatement(profiles: [profile]).binds.count == 1)
        // Audience syncs track removals: the state is FULL JOINed.
        #expect(full.contains("FULL JOIN (SELECT key, hash, removed, run_id FROM cdp.sync_state WHERE sync = $1)"))
    }
}
