import Foundation
import Postgres
import Testing
@testable import TributaryModel

/// The exact SQL of a sync's diff, without a database: every name quoted in one place, every value a bind (shown as
/// `‹value›`), consent and restriction clauses where they belong, the hash seeded by the mapping.
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
        #expect(try diff.source().sql == #"SELECT * FROM "segments"."vip""#)
        #expect(
            try diff.keyedSource().sql == """
                SELECT jsonb_build_array(s."profile_id")::text AS key, hash_record_extended(s, 0) AS hash,
                       true AS consented, s AS r
                FROM (SELECT * FROM "segments"."vip") AS s
                WHERE s."profile_id" IS NOT NULL
                """)
        let (key, payload) = try diff.jsonSQL()
        #expect(shown(key) == #"jsonb_build_object(‹profile_id›::text, (src.r)."profile_id")"#)
        #expect(shown(payload) == "to_jsonb(src.r)")
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
        let keyed = shown(try diff.keyedSource())
        #expect(keyed.contains(#"FROM (SELECT * FROM "public"."we""ird; --") AS s"#), "\(keyed)")
        #expect(keyed.contains(#"jsonb_build_array(s."id""x")::text AS key"#))
        #expect(keyed.contains(#"ROW(s."e-mail", s."phone")"#))
        #expect(keyed.contains("purpose IN (‹Marketing›, ‹it's›)") && keyed.contains("HAVING count(*) = 2"))
        #expect(keyed.contains(#"AS c ON c.profile_id = s."p'id"::uuid"#))
        #expect(keyed.contains("c.profile_id IS NOT NULL AS consented"))
        let (_, payload) = try diff.jsonSQL()
        #expect(
            shown(payload)
                == #"jsonb_build_object(‹e"mail›::text, (src.r)."e-mail", ‹h›::text, cdp.pii_hash(to_jsonb((src.r)."phone") #>> '{}', 'phone'))"#
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
        let payload = try SyncDiff(sync).jsonSQL().payload.sql
        // jsonb_build_object takes at most 100 arguments: 40 pairs per call.
        #expect(payload.components(separatedBy: "jsonb_build_object(").count - 1 == 3)
        #expect(payload.components(separatedBy: " || ").count == 3)
    }

    /// A replay's diff compares only the given keys: in the source, the state and the pending changes.
    @Test func aKeyedDiffReadsOnlyThoseKeys() throws {
        let sync = try Self.sync(
            #"{"name": "k", "source": {"relation": "customers"}, "primaryKey": ["id", "region"], "mode": "mirror", "destination": {"type": "test"}}"#
        )
        let diff = SyncDiff(sync)
        let scope = SyncDiff.Scope.keys([#"["a", "eu"]"#])
        #expect(
            shown(try diff.keyedSource(scope)).hasSuffix(
                """
                WHERE s."id" IS NOT NULL AND s."region" IS NOT NULL
                  AND jsonb_build_array(s."id", s."region")::text = ANY(‹{"[\\"a\\", \\"eu\\"]"}›::text[])
                """))
        let sql = shown(try diff.insert(scope))
        #expect(
            sql.components(separatedBy: #"WHERE sync = ‹k› AND key = ANY(‹{"[\"a\", \"eu\"]"}›::text[])"#).count - 1 == 2,
            "\(sql)")
        #expect(try diff.insert(scope).binds.count == 7)
        #expect(!shown(try diff.insert()).contains("AND key = ANY"))
    }

    @Test func aRestrictedRealTimeDiffReadsOnlyThoseProfilesState() throws {
        let sync = try Self.sync(
            #"{"name": "rt", "source": {"segment": "v"}, "primaryKey": ["profile_id"], "mode": "audience", "realtime": true, "destination": {"type": "test"}}"#
        )
        let members: PostgresQuery =
            "SELECT p.profile_id FROM cdp.segment_members AS m JOIN cdp.profile_data AS p ON p.profile_id = m.profile_id WHERE m.segment = \("v")"
        let diff = SyncDiff(sync, members: members)
        let profile = UUID(uuidString: "00000000-0000-0000-0000-0000000000aa")!
        let full = shown(try diff.insert())
        let restricted = shown(try diff.insert(.profiles([profile])))
        #expect(!full.contains("unnest") && !full.contains("AS m WHERE"))
        let ids = #"‹{"00000000-0000-0000-0000-0000000000aa"}›"#
        #expect(
            restricted.contains("SELECT * FROM (\(shown(members))) AS m WHERE m.profile_id = ANY(\(ids)::uuid[])"),
            "\(restricted)")
        #expect(
            restricted.components(
                separatedBy: "AND key = ANY(ARRAY(SELECT jsonb_build_array(x)::text FROM unnest(\(ids)::uuid[]) AS x))"
            )
            .count - 1 == 2)
        // Audience syncs track removals: the state is FULL JOINed.
        #expect(full.contains("FULL JOIN (SELECT key, hash, removed, run_id FROM cdp.sync_state WHERE sync = ‹rt›)"))
        // Only a real-time sync (members as its source) compares some profiles.
        #expect(throws: SyncError.self) { try SyncDiff(sync).insert(.profiles([profile])) }
    }
}
