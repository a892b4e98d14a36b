// Shared by the benchmarks that time real-time activation (realtime, pipeline): probes, the webhook receiver that
// notes their arrival, the prober that sends them, and POST.
import AsyncHTTPClient
import Foundation
import LocalReceiver
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Postgres
import TributaryModel

// MARK: - Probes and the receiver

public struct Probe: Sendable {
    public var number: Int
    public var phase: String
    /// Sent after the warm-up.
    public var counted: Bool
    public var sent: ContinuousClock.Instant
    public var ok: ContinuousClock.Instant?
    public var okDate: Date?
    public var arrived: ContinuousClock.Instant?
    public var arrivedDate: Date?
    public var runID: Int64?
    public var error: String?

    public var email: String { "probe-\(number)@bench.test" }
    /// Webhook receipt − HTTP 200, in seconds.
    public var latency: Double? {
        guard let ok, let arrived else { return nil }
        return Stats.seconds(arrived - ok)
    }
    public var httpLatency: Double? { ok.map { Stats.seconds($0 - sent) } }
}

/// Every probe sent, by number, and what became of it.
public final class Probes: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [Probe] = []
    private var unexpected = 0

    public init() {}

    public func add(phase: String, counted: Bool) -> Int {
        lock.withLock {
            list.append(Probe(number: list.count, phase: phase, counted: counted, sent: .now))
            return list.count - 1
        }
    }

    public func answered(_ number: Int, error: String?) {
        let now = ContinuousClock.now, date = Date()
        lock.withLock {
            if let error {
                list[number].error = error
            } else {
                list[number].ok = now
                list[number].okDate = date
            }
        }
    }

    /// A change received for `email`; only the first receipt of a probe counts.
    public func arrived(email: String, runID: Int64?, at now: ContinuousClock.Instant, date: Date) {
        guard email.hasPrefix("probe-"), email.hasSuffix("@bench.test"),
            let number = Int(email.dropFirst(6).dropLast(11))
        else {
            lock.withLock { unexpected += 1 }
            return
        }
        lock.withLock {
            guard number < list.count, list[number].arrived == nil else { return }
            list[number].arrived = now
            list[number].arrivedDate = date
            list[number].runID = runID
        }
    }

    public func all(phase: String) -> [Probe] { lock.withLock { list.filter { $0.phase == phase } } }
    public var unexpectedCount: Int { lock.withLock { unexpected } }
}

/// The webhook: notes the receipt of every added profile's email.
public final class ProbeReceiver: @unchecked Sendable {
    public let probes: Probes
    private let lock = NSLock()
    private var requests = 0, adds = 0, others = 0, bad = 0

    public init(probes: Probes) { self.probes = probes }

    public func counts() -> String {
        lock.withLock {
            "\(requests) requests, \(adds) adds, \(others) other changes, \(bad) unreadable bodies, \(probes.unexpectedCount) adds of non-probes"
        }
    }

    public func record(_ body: [UInt8]) -> Bool {
        let now = ContinuousClock.now, date = Date()
        guard let document = try? JSONParser.parse(body), case .array(let changes)? = document["changes"] else {
            lock.withLock { bad += 1 }
            return false
        }
        let runID: Int64? = if case .number(let text)? = document["run_id"] { Int64(text) } else { nil }
        var added = 0
        for change in changes {
            guard case .string("add")? = change["op"], case .string(let email)? = change["fields"]?["email"] else { continue }
            added += 1
            probes.arrived(email: email, runID: runID, at: now, date: date)
        }
        lock.withLock {
            requests += 1
            adds += added
            others += changes.count - added
        }
        return true
    }

    /// Runs the receiver on 127.0.0.1 (a free port, ``LocalReceiver``) while `body` runs with its base URL; the
    /// webhook is its path `/hook`.
    public func serve(_ body: (String) async throws -> Void) async throws {
        try await LocalReceiver.serve(
            maxBody: 64 << 20,
            handler: { [self] request in
                LocalReceiver.Answer(status: record(request.body) ? 200 : 400)
            }, body)
    }
}

/// Sends a probe every interval, each in a task of its own (a slow answer never delays the next probe).
public struct Prober: Sendable {
    public let http: HTTPClient
    public let url: String
    public let authorization: String
    public let probes: Probes

    public init(http: HTTPClient, url: String, authorization: String, probes: Probes) {
        (self.http, self.url, self.authorization, self.probes) = (http, url, authorization, probes)
    }

    public func run(
        phase: String, every interval: Duration, from countFrom: ContinuousClock.Instant, until end: ContinuousClock.Instant
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var due = ContinuousClock.now
            while due < end {
                try await Task.sleep(until: due)
                let number = probes.add(phase: phase, counted: due >= countFrom)
                group.addTask { await send(number) }
                due += interval
            }
            try await group.waitForAll()
        }
    }

    public func send(_ number: Int) async {
        let time = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        let user = "probe-\(number)"
        let body =
            #"{"batch":[{"type":"identify","userId":"\#(user)","messageId":"\#(user)-i","traits":{"email":"\#(user)@bench.test","name":"Probe \#(number)"},"timestamp":"\#(time)"},{"type":"track","userId":"\#(user)","messageId":"\#(user)-t","event":"Added to Cart","properties":{"product_id":"sku-\#(number % 1000)","price":19.99,"quantity":1},"timestamp":"\#(time)"}],"sentAt":"\#(time)"}"#
        probes.answered(number, error: await post(http, url, authorization, body))
    }
}

/// POSTs a body; nil when answered 200, else what went wrong.
public func post(_ http: HTTPClient, _ url: String, _ authorization: String, _ body: String) async -> String? {
    var request = HTTPClientRequest(url: url)
    request.method = .POST
    request.headers.add(name: "Authorization", value: authorization)
    request.headers.add(name: "Content-Type", value: "application/json")
    request.body = .bytes(ByteBuffer(string: body))
    do {
        let response = try await http.execute(request, timeout: .seconds(60))
        let text = try await response.body.collect(upTo: 1 << 20)
        return response.status == .ok ? nil : "HTTP \(response.status.code): \(String(buffer: text).prefix(200))"
    } catch {
        return "\(error)"
    }
}
