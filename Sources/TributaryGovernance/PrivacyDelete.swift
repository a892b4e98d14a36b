import Foundation
import Logging
import Postgres
import TributaryCollection
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributarySegments
import TributarySyncs

extension PrivacyRequests {
    /// What a deletion did.
    public struct DeletionReport: Sendable, Equatable {
        public var requestID: Int64
        /// The profiles deleted (live ones; ids merged into them went too).
        public var profiles: [UUID]
        /// Identifiers suppressed.
        public var identifiers: Int
        /// Rows deleted (or cleared) per table, and `destinations.<sync>`: deletions sent to each sync's destination.
        public var counts: [String: Int]
        /// Destinations were not told (`--skip-destinations`).
        public var skippedDestinations: Bool
    }

    /// Deletes everything held about the person one of whose identifiers is `identifier` (`KIND:VALUE`, normalized
    /// as the identity stage normalizes identifiers), and suppresses their identifiers.
    ///
    /// 1. The identifier is resolved to the profile holding it, and every identifier of that profile is collected
    ///    (an identifier nobody holds is still suppressed, and unresolved events carrying it deleted).
    /// 2. Unless `skipDestinations`, every sync holding delivered or pending rows about the person (a key or field
    ///    equal to one of the profile ids or identifiers, or their `cdp.pii_hash`) is told to delete them: `remove`
    ///    for audience syncs, `delete` otherwise, with the fields last delivered. If a destination fails, the
    ///    request fails naming the sync and nothing is deleted here, so it can be retried. The syncs' locks are held
    ///    until the end, so no run re-delivers the person meanwhile.
    /// 3. In one transaction (holding the identity, profile and segment stages' locks and, at the end, the event
    ///    writers' lock): their events and every event carrying one of their identifiers (an alias call's previousId
    ///    included, as a user id and as an anonymous id), message ids, identity
    ///    graph, profiles, merge history, traits and trait history, profile data, consent and its history, segment
    ///    memberships and their history, and sync state, pending sends and errors about them are deleted; their
    ///    identifiers are added to `cdp.suppressions` (as SHA-256), so later events carrying them (alias calls naming
    ///    them as previousId too) are dropped.
    ///
    /// The request is logged in `cdp.privacy_requests` and the audit log (`privacy.delete`), with counts.
    public func delete(
        identifier: String, actor: AuditLog.Actor, registry: DestinationRegistry, skipDestinations: Bool = false
    ) async throws -> DeletionReport {
        let subject = try await resolve(identifier)
        let request = try await begin("delete", subject.requested, actor: actor)
        do {
            return try await client.withConnection { db in
                let needles = try await Self.needles(db, subject)
                // The syncs holding anything about the person, locked (as a run locks them) until the deletion commits.
                let syncs = try await db.query(
                    """
                    SELECT DISTINCT sync FROM (
                        SELECT sync FROM cdp.sync_state WHERE \(Self.mentions(key: "key_object", fields: "payload", needles: needles))
                        UNION ALL SELECT sync FROM cdp.sync_pending WHERE \(Self.mentions(key: "key_object", fields: "payload", needles: needles))
                        UNION ALL SELECT sync FROM cdp.sync_errors WHERE \(Self.mentions(key: "key_object", fields: nil, needles: needles))
                    ) AS found ORDER BY sync
                    """
                ).map { try $0[0].decode(String.self) }
                var locked: [AdvisoryLockKey] = []
                do {
                    for sync in syncs {
                        let key = SyncRunner.lockKey(sync)
                        try await db.advisoryLock(key)
                        locked.append(key)
                    }
                    var counts: [String: Int] = [:]
                    if !skipDestinations {
                        for sync in syncs {
                            counts["destinations.\(sync)"] = try await propagate(
                                sync: sync, subject: subject, needles: needles, request: request, registry: registry, db)
                        }
                    }
                    let report = try await db.withTransaction { tx in
                        try await deleteLocally(
                            subject, needles: needles, request: request, actor: actor,
                            skipDestinations: skipDestinations, counts: counts, tx)
                    }
                    for key in locked.reversed() { _ = try await db.advisoryUnlock(key) }
                    return report
                } catch {
                    // Release the locks even when cancelled (a cancelled task's queries never reach the server).
                    let held = locked
                    await Task { for key in held.reversed() { _ = try? await db.advisoryUnlock(key) } }.value
                    throw error
                }
            }
        } catch {
            throw await fail(error, request: request, kind: "delete", subject: subject, actor: actor)
        }
    }

    /// Sends the deletion of the person's rows to one sync's destination; returns how many rows it was told about.
    /// Throws ``PrivacyDestinationError`` naming the sync when the destination fails or refuses a row.
    private func propagate(
        sync name: String, subject: Subject, needles: [String], request: Int64, registry: DestinationRegistry,
        _ db: PostgresConnection
    ) async throws -> Int {
        func failure(_ reason: String) -> PrivacyDestinationError { PrivacyDestinationError(sync: name, reason: reason) }
        guard
            let text = try await db.query("SELECT definition::text FROM cdp.syncs WHERE name = \(name)").first?[0].decode(
                String.self)
        else {
            return 0  // removed meanwhile: its state went with it
        }
        let sync: SyncDefinition
        do {
            sync = try SyncDefinitions.stored(text, name: name, registry: registry)
        } catch {
            throw failure("\(error)")
        }
        // What the destination may hold: the confirmed state (tombstones are already deleted there), else a pending send.
        let held = Self.mentions(key: "key_object", fields: "payload", needles: needles)
        let rows = try await db.query(
            """
            SELECT DISTINCT ON (key) key, key_object::text, payload::text FROM (
                SELECT 0 AS rank, key, key_object, payload FROM cdp.sync_state
                WHERE sync = \(name) AND NOT removed AND \(held)
                UNION ALL
                SELECT 1, key, key_object, payload FROM cdp.sync_pending WHERE sync = \(name) AND \(held)
            ) AS held ORDER BY key, rank
            """)
        let operation: SyncOperation = sync.mode == .audience ? .remove : .delete
        let changes = try rows.map { row in
            let (key, keyObject, payload) = try row.decode((String, String, String).self)
            return SyncChange(
                operation: operation, key: try JSONParser.parse(Array(keyObject.utf8)),
                fields: try JSONParser.parse(Array(payload.utf8)),
                idempotencyKey: sha256Hex(Data("privacy\u{1}\(request)\u{1}\(name)\u{1}\(key)".utf8), bytes: 16))
        }
        if changes.isEmpty { return 0 }
        let started = ContinuousClock.now
        let runID = try await db.query(
            """
            INSERT INTO cdp.sync_runs (sync, trigger, status, worker) VALUES (\(name), 'manual', 'running', 'tributary:privacy')
            RETURNING run_id
            """
        ).scalar(Int64.self)
        func finishRun(_ error: String?, delivered: Int) async throws {
            let took = ContinuousClock.now - started
            try await db.execute(
                """
                UPDATE cdp.sync_runs SET status = \(error == nil ? "succeeded" : "failed"), removed = \(changes.count),
                       delivered = \(delivered), failed = \(changes.count - delivered), finished_at = now(),
                       duration_ms = \(took.milliseconds), error = \(error)
                WHERE run_id = \(runID)
                """)
        }
        var delivered = 0
        do {
            let destination = try await registry.make(
                DestinationContext(sync: name, runID: runID, settings: sync.destination, client: client, logger: logger))
            do {
                let size = max(1, min(sync.batchSize, destination.maxBatchSize))
                for start in stride(from: 0, to: changes.count, by: size) {
                    let batch = Array(changes[start..<min(start + size, changes.count)])
                    let results = try await destination.send(batch)
                    for (change, result) in zip(batch, results) {
                        if case .rejected(let reason) = result {
                            throw failure("the destination refused the \(change.operation.rawValue) of a row: \(reason)")
                        }
                    }
                    delivered += batch.count
                }
                try await destination.finish()
                await destination.close()
            } catch {
                await destination.close()
                throw error
            }
        } catch {
            let reported = error as? PrivacyDestinationError ?? failure("\(error)")
            try? await finishRun(Self.redacted(reported.description, subject), delivered: 0)
            throw reported
        }
        try await finishRun(nil, delivered: delivered)
        logger.notice(
            "privacy deletion sent to a destination",
            metadata: ["sync": "\(name)", "rows": "\(delivered)", "request": "\(request)"])
        return delivered
    }

    /// Deletes every row about the person, suppresses their identifiers and logs the request, in `tx`.
    private func deleteLocally(
        _ subject: Subject, needles: [String], request: Int64, actor: AuditLog.Actor, skipDestinations: Bool,
        counts initial: [String: Int], _ tx: PostgresConnection
    ) async throws -> DeletionReport {
        var counts = initial
        // Stages that write about profiles wait for us (they skip a batch while we hold their locks).
        try await tx.advisoryTransactionLock(IdentityStore.processorLock)
        try await tx.advisoryTransactionLock(ProfileStage.processorLock)
        try await tx.advisoryTransactionLock(SegmentMembership.lock)
        // Resolve what the identity stage has not yet, here: its checkpoint moves past the person's newest events, so
        // an extraction it prefetched before (still naming them) is not used after we commit.
        let identity = IdentityStage(client: client, logger: logger)
        while try await identity.process(tx, prefetched: nil, prefetchNext: false).report.events > 0 {}
        try await Self.stageSubject(tx, subject)
        let rules = try await Self.rulesDocument(tx)

        // Events: everything stored up to now without blocking writers, then what arrived meanwhile under their lock.
        let through = try await tx.query("SELECT coalesce(max(seq), 0) FROM cdp.events").scalar(Int64.self)
        func deleteEvents(_ range: PostgresQuery) async throws -> Int {
            try await tx.query(
                """
                WITH gone AS (
                    DELETE FROM cdp.events AS e
                    WHERE \(range) AND (e.profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)
                                        OR \(Self.carriesIdentifier(rules: rules)))
                    RETURNING e.source_id, e.message_id
                ), ids AS (
                    DELETE FROM cdp.event_message_ids AS m USING gone
                    WHERE m.source_id = gone.source_id AND m.message_id = gone.message_id
                )
                SELECT count(*) FROM gone
                """
            ).scalar(Int.self)
        }
        counts["events"] = try await deleteEvents("e.seq <= \(through)")
        try await tx.advisoryTransactionLock(EventWriter.sequenceLock)
        counts["events"]! += try await deleteEvents("e.seq > \(through)")

        let inProfiles = "profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)"
        let isIdentifier = "(kind, value) IN (SELECT kind, value FROM pg_temp.tributary_privacy_ids)"
        let statements: [(String, String)] = [
            (
                "identity_edges",
                """
                DELETE FROM cdp.identity_edges WHERE a IN (SELECT node_id FROM pg_temp.tributary_privacy_nodes)
                                                  OR b IN (SELECT node_id FROM pg_temp.tributary_privacy_nodes)
                """
            ),
            (
                "identity_nodes",
                "DELETE FROM cdp.identity_nodes WHERE node_id IN (SELECT node_id FROM pg_temp.tributary_privacy_nodes)"
            ),
            ("identity_profiles", "DELETE FROM cdp.identity_profiles WHERE \(inProfiles)"),
            (
                "profile_merge_log",
                """
                DELETE FROM cdp.profile_merge_log
                WHERE from_profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)
                   OR into_profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)
                """
            ),
            (
                "profile_redirects",
                """
                DELETE FROM cdp.profile_redirects
                WHERE from_profile_id IN (SELECT profile_id FROM pg_temp.tributary_privacy_profiles)
                   OR \(inProfiles)
                """
            ),
            // Another profile's merge or split caused by one of the identifiers keeps its row, without the identifier.
            ("profile_merge_log_identifiers", "UPDATE cdp.profile_merge_log SET kind = NULL, value = NULL WHERE \(isIdentifier)"),
            ("profile_changes", "DELETE FROM cdp.profile_changes WHERE \(inProfiles)"),
            ("profile_trait_values", "DELETE FROM cdp.profile_trait_values WHERE \(inProfiles)"),
            ("trait_history", "DELETE FROM cdp.trait_history WHERE \(inProfiles)"),
            ("profile_data", "DELETE FROM cdp.profile_data WHERE \(inProfiles)"),
            ("profile_predictions", "DELETE FROM cdp.profile_predictions WHERE \(inProfiles)"),
            ("profile_propensities", "DELETE FROM cdp.profile_propensities WHERE \(inProfiles)"),
            ("profile_recommendations", "DELETE FROM cdp.profile_recommendation_lists WHERE \(inProfiles)"),
            ("profile_consent", "DELETE FROM cdp.profile_consent WHERE \(inProfiles)"),
            ("consent_changes", "DELETE FROM cdp.consent_changes WHERE \(inProfiles)"),
            ("segment_members", "DELETE FROM cdp.segment_members WHERE \(inProfiles)"),
            ("segment_changes", "DELETE FROM cdp.segment_changes WHERE \(inProfiles)"),
        ]
        try await tx.execute(
            PostgresQuery(
                unsafeSQL: """
                    CREATE TEMP TABLE tributary_privacy_nodes ON COMMIT DROP AS
                    SELECT node_id FROM cdp.identity_nodes WHERE \(inProfiles) OR \(isIdentifier)
                    """))
        for (table, sql) in statements {
            counts[table] = try await tx.execute(PostgresQuery(unsafeSQL: sql)) ?? 0
        }
        // Redirects through the deleted ids, and the identity stage's cache of the graph.
        try await IdentityStore.refreshRedirects(
            tx, touchedBy: "SELECT profile_id FROM pg_temp.tributary_privacy_profiles")
        try await IdentityStore.advanceGraphEpoch(tx)
        for (table, fields) in [
            ("sync_state", "payload"), ("sync_pending", "payload"), ("sync_errors", nil), ("sync_run_rows", nil),
        ] {
            counts[table] =
                try await tx.execute(
                    "DELETE FROM cdp.\(identifier: table) WHERE \(Self.mentions(key: "key_object", fields: fields, needles: needles))"
                )
                ?? 0
        }
        counts["suppressions"] =
            try await tx.execute(
                """
                INSERT INTO cdp.suppressions (identifier_hash, kind, request_id)
                SELECT cdp.identifier_hash(kind, value), kind, \(request) FROM pg_temp.tributary_privacy_ids
                ON CONFLICT (identifier_hash) DO NOTHING
                """) ?? 0
        let identifiers = try await tx.query("SELECT count(*) FROM pg_temp.tributary_privacy_ids").scalar(Int.self)
        let countsJSON = JSONValue.object(counts.sorted { $0.key < $1.key }.map { ($0.key, .number(String($0.value))) })
        try await Self.finish(
            tx, request: request, kind: "delete", identifier: subject.requested, actor: actor, counts: countsJSON,
            details: [
                ("profiles", .number(String(subject.profiles.count))), ("identifiers", .number(String(identifiers))),
                ("skip_destinations", .bool(skipDestinations)),
            ])
        logger.notice(
            "privacy deletion done",
            metadata: [
                "request": "\(request)", "events": "\(counts["events"] ?? 0)",
                "identifiers": "\(identifiers)", "skip_destinations": "\(skipDestinations)",
            ])
        return DeletionReport(
            requestID: request, profiles: subject.profiles, identifiers: identifiers, counts: counts,
            skippedDestinations: skipDestinations)
    }
}
