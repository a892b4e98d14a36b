import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Postgres
import PostgresTesting
import Testing

/// Several `tributary serve` processes against one database, as a deployment behind a load balancer runs them: each
/// runs the identity and profile stages, a batch is done by one process at a time (the stage's advisory lock), and
/// when processes die with `kill -9` mid-stream the survivor carries on — no event lost, none counted twice, and the
/// identity graph exactly what a rebuild from the events gives.
@Suite struct MultiProcessTests {
    /// Identify and track calls of `users` people, each first anonymous, then signed in with an email: merges for
    /// the identity stage and traits for the profile stage.
    func calls(users: Int) -> [String] {
        (0..<users).flatMap { u in
            [
                #"{"type":"page","anonymousId":"a-\#(u)","name":"Home","messageId":"p-\#(u)"}"#,
                #"{"type":"identify","anonymousId":"a-\#(u)","userId":"u-\#(u)","traits":{"email":"User\#(u)@Example.com","plan":"p\#(u % 3)"},"messageId":"i-\#(u)"}"#,
                #"{"type":"track","userId":"u-\#(u)","event":"Order Completed","properties":{"revenue":\#(u % 50)},"messageId":"t-\#(u)"}"#,
                #"{"type":"track","anonymousId":"b-\#(u)","event":"Product Viewed","context":{"traits":{"email":"user\#(u)@example.com"}},"messageId":"v-\#(u)"}"#,
            ]
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func threeServersSurviveKillsWithEveryEventResolvedOnce() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 2) { (client) async throws in
            let url = client.configuration.resolvedConnectionString
            let environment = ProcessInfo.processInfo.environment.merging(["DATABASE_URL": url]) { $1 }
            let created = try await ProcessRunner.runDetached(
                CLITests.executable.path, ["sources", "create", "load"], environment: environment,
                directory: TestDatabase.packageRoot.path, separateErrors: true)
            try #require(created.status == 0, "\(created.errorText)")
            let key = String(created.text.split(separator: "\n").last ?? "")
            let crash = CrashTests()
            var logs: [String] = []
            var servers: [(pid: pid_t, port: Int)] = []
            for n in 0..<3 {
                let log = FileManager.default.temporaryDirectory.appendingPathComponent(
                    "multi-\(n)-\(UUID().uuidString.prefix(8)).log"
                ).path
                logs.append(log)
                // Debug logs show each stage batch a server does.
                servers.append(try await crash.startServer(url: url, log: log, arguments: ["--log-level", "debug"]))
            }
            defer { for log in logs { try? FileManager.default.removeItem(atPath: log) } }

            // Load through the third server; kill the other two while the stages work through the stream.
            let calls = calls(users: 3_000)
            let acks = CrashTests.Acks()
            let survivor = servers[2]
            let loading = Task { await post(calls, port: survivor.port, key: key, acks: acks) }
            /// Whether server `n` has done identity batches (the stage is shared: each batch goes to whoever takes the
            /// lock first).
            func working(_ n: Int) -> Bool {
                ((try? String(contentsOfFile: logs[n], encoding: .utf8)) ?? "").contains("identity: batch timings")
            }
            while acks.count < calls.count / 3 || !working(0) { try await Task.sleep(for: .milliseconds(5)) }
            kill(servers[0].pid, SIGKILL)
            ProcessRunner.wait(servers[0].pid)
            while acks.count < 2 * calls.count / 3 || !working(1) { try await Task.sleep(for: .milliseconds(5)) }
            kill(servers[1].pid, SIGKILL)
            ProcessRunner.wait(servers[1].pid)
            await loading.value
            #expect(acks.count == calls.count, "the surviving server acknowledges every call")

            // The survivor's stages reach the end of the stream.
            var caughtUp = false
            for _ in 0..<600 where !caughtUp {
                caughtUp = try await client.query(
                    """
                    SELECT (SELECT count(*) FROM cdp.stage_checkpoints
                            WHERE stage IN ('identity', 'profiles') AND seq = (SELECT max(seq) FROM cdp.events)) = 2
                    """
                ).scalar(Bool.self)
                if !caughtUp { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(caughtUp, "the identity and profile stages of the surviving server reach the end of the stream")

            // Every call stored once, every event stamped, every event counted once in its profile.
            let totals = try await client.query(
                "SELECT count(*), count(DISTINCT message_id), count(profile_id) FROM cdp.events"
            ).first!
            #expect(try totals.decode((Int, Int, Int).self) == (calls.count, calls.count, calls.count))
            let counted = try await client.query(
                """
                SELECT count(*) FROM cdp.profile_data AS d
                WHERE d.event_count <> (SELECT count(*) FROM cdp.events AS e WHERE e.profile_id = d.profile_id)
                """
            ).scalar(Int.self)
            #expect(counted == 0, "\(counted) profiles count their events wrongly")
            let profiled = try await client.query("SELECT coalesce(sum(event_count), 0)::int8 FROM cdp.profile_data").scalar(
                Int.self)
            #expect(profiled == calls.count)
            // One profile per person: the anonymous visits, the sign-in and the email on another device merged.
            #expect(try await client.query("SELECT count(*) FROM cdp.identity_profiles").scalar(Int.self) == 3_000)

            // The graph the three processes built together is the one a rebuild from the events gives.
            let rebuild = try await ProcessRunner.runDetached(
                CLITests.executable.path, ["identity", "rebuild"], environment: environment,
                directory: TestDatabase.packageRoot.path, separateErrors: true)
            #expect(rebuild.status == 0, "\(rebuild.errorText)")
            #expect(rebuild.text.contains("changed: 0 identifiers, 0 event stamps"), "\(rebuild.text)")

            kill(survivor.pid, SIGTERM)
            #expect(ProcessRunner.wait(survivor.pid) == 0, "graceful shutdown on SIGTERM")
        }
    }

    /// Posts `calls` in batches of 40 from 4 concurrent clients, retrying a batch until it is acknowledged (as SDKs
    /// retry after errors).
    func post(_ calls: [String], port: Int, key: String, acks: CrashTests.Acks) async {
        let batches = stride(from: 0, to: calls.count, by: 40).map { Array(calls[$0..<min($0 + 40, calls.count)]) }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    for (n, batch) in batches.enumerated() where n % 4 == worker {
                        for _ in 0..<50 {
                            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/batch")
                            request.method = .POST
                            request.headers.add(
                                name: "Authorization", value: "Basic " + Data("\(key):".utf8).base64EncodedString())
                            request.body = .bytes(ByteBuffer(string: #"{"batch":[\#(batch.joined(separator: ","))]}"#))
                            if let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)),
                                response.status == .ok
                            {
                                _ = try? await response.body.collect(upTo: 1 << 20)
                                acks.add(batch)
                                break
                            }
                            try? await Task.sleep(for: .milliseconds(100))
                        }
                    }
                }
            }
        }
    }
}
