import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TributaryModel

/// One HTTP exchange for HTTP destinations, with failures sorted the way the sync runner needs them: connection
/// failures, timeouts, 429 and 5xx are retryable (with `Retry-After`, in seconds or as an HTTP date); other statuses
/// are returned for the destination to judge.
public struct HTTPSender: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    let client: HTTPClient
    public var timeout: Duration

    public init(client: HTTPClient = .shared, timeout: Duration = .seconds(30)) {
        self.client = client
        self.timeout = timeout
    }

    /// Sends a request (`method`: `POST`, `DELETE`, …); throws a retryable ``DestinationError`` for connection failures, timeouts, 429 and 5xx.
    public func send(
        _ method: String, _ url: String, headers: [(String, String)], body: [UInt8]?, bodyLimit: Int = 1 << 20
    ) async throws -> Response {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response: HTTPClientResponse
        var collected: ByteBuffer
        do {
            response = try await client.execute(
                request,
                timeout: .nanoseconds(
                    Int64(timeout.components.seconds) * 1_000_000_000
                        + timeout.components.attoseconds / 1_000_000_000))
            collected = try await response.body.collect(upTo: bodyLimit)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw DestinationError("\(method) \(Self.redacted(url)): \(error)", retryable: true)
        }
        let status = Int(response.status.code)
        let answer = Response(
            status: status, headers: response.headers.map { ($0.name, $0.value) },
            body: collected.readBytes(length: collected.readableBytes) ?? [])
        if status == 429 || status >= 500 {
            throw DestinationError(
                "\(method) \(Self.redacted(url)): HTTP \(status) \(answer.text.prefix(200))", retryable: true,
                retryAfter: response.headers.first(name: "Retry-After").flatMap(Self.retryAfter))
        }
        return answer
    }

    /// `Retry-After` as seconds or an HTTP date.
    static func retryAfter(_ value: String) -> Duration? {
        if let seconds = Int(value.trimmingCharacters(in: .whitespaces)), seconds >= 0 { return .seconds(seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(max(0, Int64(date.timeIntervalSinceNow * 1000)))
    }

    /// `application/x-www-form-urlencoded` of the pairs.
    public static func formEncoded(_ pairs: [(String, String)]) -> [UInt8] {
        Array(pairs.map { "\(percentEncoded($0.0))=\(percentEncoded($0.1))" }.joined(separator: "&").utf8)
    }

    /// The URL without its query string (which may carry a token), for messages.
    static func redacted(_ url: String) -> String {
        url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
    }
}
