import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Postgres
import PostgresTesting
import Testing

/// `kill -9` of `tributary serve` under load: every event that got a 200 is stored, and clients' retries of
/// everything (acknowledged or not) create no duplicates.
@Suite struct CrashTests {
    final class Acks: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var acknowledged = Set<String>()
        func add(_ ids: [String]) {
            lock.lock()
            acknowledged.formUnion(ids)
            lock.unlock()
        }
        var count: Int {
            lock.lock()
            defer { lock.unlock() }
            return acknowledged.count
        }
    }

    /// Starts `tributary serve --port 0`; returns its pid and port once it listens.
    func startServer(url: String, log: String, arguments: [String] = []) async throws -> (pid_t, Int) {
        try? FileManager.default.removeItem(atPath: log)
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = url
        let pid = try ProcessRunner.start(
            CLITests.executable.path, ["serve", "--port", "0"] + arguments, environment: environment, logFile: log)
        for _ in 0..<300 {
            if let text = try? String(contentsOfFile: log, encoding: .utf8),
                let range = text.range(of: "collecting on http://127.0.0.1:"),
                let port = Int(text[range.upperBound...].prefix { $0.isNumber })
            {
                return (pid, port)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(pid, SIGKILL)
        throw CancellationError()
    }

    func batch(_ ids: ArraySlice<String>) -> ByteBuffer {
        let calls = ids.map {
            #"{"type":"track","userId":"u-\#($0)","event":"Crash Test","messageId":"\#($0)","properties":{"n":1}}"#
        }
        return ByteBuffer(string: #"{"batch":[\#(calls.joined(separator: ","))]}"#)
    }

    /// Posts `ids` in batches of 50 from 6 concurrent clients; records what was acknowledged; stops at the first error.
    func load(_ ids: [String], port: Int, key: String, acks: Acks) async {
        let chunks = stride(from: 0, to: ids.count, by: 50).map { ids[$0..<min($0 + 50, ids.count)] }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    for (n, chunk) in chunks.enumerated() where n % 6 == worker {
                        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/batch")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Basic " + Data("\(key):".utf8).base64EncodedString())
                        request.body = .bytes(batch(chunk))
                        guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)),
                            response.status == .ok
                        else { return }
                        _ = try? await response.body.collect(upTo: 1 << 20)
                        acks.add(Array(chunk))
                    }
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(6)))
    func killDashNineLosesNothingAcknowledgedAndRetriesStoreOnce() async throws {
        try await TestDatabase.withFreshDatabase(maxConnections: 2) { (client) async throws in
            let url = client.configuration.resolvedConnectionString
            let environment = ["DATABASE_URL": url]
            let created = try await ProcessRunner.runDetached(
                CLITests.executable.path, ["sources", "create", "load"],
                environment: ProcessInfo.processInfo.environment.merging(environment) { $1 },
                directory: TestDatabase.packageRoot.path, separateErrors: true)
            try #require(created.status == 0, "\(created.errorText)")
            let key = String(created.text.split(separator: "\n").last ?? "")
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("crash-\(UUID().uuidString.prefix(8)).log")
                .path
            defer { try? FileManager.default.removeItem(atPath: log) }

            let ids = (0..<30_000).map { "crash-\($0)" }
            let acks = Acks()
            let (pid, port) = try await startServer(url: url, log: log)
            let loading = Task { await load(ids, port: port, key: key, acks: acks) }
            // Kill it mid-load, once a good share has been acknowledged.
            while acks.count < 3_000 { try await Task.sleep(for: .milliseconds(5)) }
            kill(pid, SIGKILL)
            ProcessRunner.wait(pid)
            await loading.value
            let acknowledged = acks.acknowledged
            #expect(acknowledged.count < ids.count, "the kill should land before the load ends")

            // Every acknowledged event is stored, exactly once.
            let stored = Set(
                try await client.query("SELECT message_id FROM cdp.events").map { try $0["message_id"].decode(String.self) })
            #expect(
                acknowledged.isSubset(of: stored), "\(acknowledged.subtracting(stored).count) acknowledged events are missing")
            #expect(try await client.query("SELECT count(*) - count(DISTINCT message_id) FROM cdp.events").scalar(Int.self) == 0)

            // Clients retry everything, as SDKs do after errors: nothing is stored twice.
            let (again, secondPort) = try await startServer(url: url, log: log)
            let retries = Acks()
            await load(ids, port: secondPort, key: key, acks: retries)
            // The server's identity and profile stages, killed mid-batch the first time, catch up on every event.
            var caughtUp = false
            for _ in 0..<1200 where !caughtUp {
                caughtUp = try await client.query(
                    """
                    SELECT coalesce((SELECT seq FROM cdp.stage_checkpoints WHERE stage = 'profiles'), 0) = (SELECT max(seq) FROM cdp.events)
                    """
                ).scalar(Bool.self)
                if !caughtUp { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(caughtUp, "the profile stage in tributary serve reaches the end of the stream")
            let profiled = try await client.query("SELECT count(*), coalesce(sum(event_count), 0)::int8 FROM cdp.profile_data")
                .first!
            #expect(try profiled.decode((Int, Int).self) == (ids.count, ids.count))
            kill(again, SIGTERM)
            #expect(ProcessRunner.wait(again) == 0, "graceful shutdown on SIGTERM")
            #expect(retries.count == ids.count)
            let totals = try await client.query("SELECT count(*), count(DISTINCT message_id) FROM cdp.events").first!
            #expect(try totals.decode((Int, Int).self) == (ids.count, ids.count))
        }
    }
}
