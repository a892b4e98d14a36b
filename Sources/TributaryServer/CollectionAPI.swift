import CoreMetrics
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Postgres
import Prometheus
import TributaryCollection
import TributaryConsole
import TributaryGovernance
import TributaryIdentity
import TributaryModel
import TributaryProfiles
import TributaryRuntime
import TributaryService
import TributarySyncs

/// Settings of `tributary serve`.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var limits: CollectionLimits
    /// Events waiting for the writer before requests get 503.
    public var maxQueuedEvents: Int
    /// How long a write key lookup is cached (a disabled or rotated key stops working within this time).
    public var writeKeyCacheTTL: Duration
    /// How long an API token lookup is cached (a revoked token stops working within this time).
    public var apiTokenCacheTTL: Duration
    /// The destinations a privacy deletion tells to delete the person's rows (`DestinationRegistry.standard()` in
    /// `tributary serve`); a sync whose destination is missing here makes such a deletion fail, naming it.
    public var destinations: DestinationRegistry
    /// Guesses of incoming events' profiles, stored with them (``Pipeline/profileHints`` when this process runs the
    /// identity stage); nil: events are stored unstamped and the identity stage stamps them.
    public var profileHints: (any ProfileHints)?
    /// Serve the web console under `/console` (``Console``).
    public var console: Bool
    /// A streaming replica the profile API reads from while it is within its lag bound (nil: the primary).
    public var readReplica: ReadReplica?

    public init(
        host: String = "127.0.0.1", port: Int = 8080, limits: CollectionLimits = CollectionLimits(),
        maxQueuedEvents: Int = 50_000, writeKeyCacheTTL: Duration = .seconds(5), apiTokenCacheTTL: Duration = .seconds(5),
        destinations: DestinationRegistry = .core(), profileHints: (any ProfileHints)? = nil, console: Bool = false,
        readReplica: ReadReplica? = nil
    ) {
        self.console = console
        self.readReplica = readReplica
        self.destinations = destinations
        self.profileHints = profileHints
        self.host = host
        self.port = port
        self.limits = limits
        self.maxQueuedEvents = maxQueuedEvents
        self.writeKeyCacheTTL = writeKeyCacheTTL
        self.apiTokenCacheTTL = apiTokenCacheTTL
    }
}

/// Builds the HTTP application: Segment's Tracking API under `/v1`, the profile API
/// (`GET /v1/profiles/{kind}/{value}`), `GET /health` and `GET /metrics`.
///
/// Kept apart from the command so tests build the same application and drive it through a real socket.
///
/// - Parameter onListening: called with the port once the server listens (useful with port 0).
public func buildApplication(
    configuration: ServerConfiguration, client: PostgresClient, metrics: ServerMetrics = ServerMetrics(), logger: Logger,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) -> some ApplicationProtocol {
    let writer = EventWriter(
        client: client, maxQueuedEvents: configuration.maxQueuedEvents, profileHints: configuration.profileHints,
        logger: logger
    ) {
        stored, duplicates, _ in
        metrics.accepted.increment(by: Int64(stored))
        metrics.duplicates.increment(by: Int64(duplicates))
        metrics.flushSize.record(Double(stored + duplicates))
    }
    let api = CollectionAPI(
        configuration: configuration, writer: writer,
        keys: CredentialCache(sources: SourceStore(client: client), ttl: configuration.writeKeyCacheTTL),
        webhookMappings: WebhookMappingStore(client: client), metrics: metrics, logger: logger)
    let router = Router(context: TributaryRequestContext.self)
    // Collection: write keys (checked by the handler, which may find the key in the body); latency and status counted.
    let collection = router.group("/v1").add(
        middleware: RequestMetricsMiddleware(metrics: metrics, duration: metrics.batchDuration))
    for type in CallType.allCases {
        collection.post("\(type.rawValue)") { request, _ in await api.handle(request, type: type) }
    }
    collection.post("batch") { request, _ in await api.handle(request, type: nil) }
    collection.post("import") { request, _ in await api.handle(request, type: nil) }
    collection.post("webhooks/:source") { request, context in
        await api.handleWebhook(request, sourceName: context.parameters.get("source") ?? "")
    }
    // The APIs that take API tokens: one token cache for all of them; each route group checks its scope.
    let auth = AdminAuth(client: client, ttl: configuration.apiTokenCacheTTL, logger: logger)
    ProfileAPI(client: client, replica: configuration.readReplica, logger: logger).register(
        on: router.group("/v1/profiles")
            .add(middleware: RequestMetricsMiddleware(metrics: metrics, duration: metrics.profileDuration))
            .add(middleware: TokenAuthMiddleware(auth: auth, scope: .profilesRead)))
    PrivacyAPI(client: client, writer: writer, registry: configuration.destinations, logger: logger).register(
        on: router.group("/v1/privacy")
            .add(middleware: RequestMetricsMiddleware(metrics: metrics, duration: nil))
            .add(middleware: TokenAuthMiddleware(auth: auth, scope: .privacy)))
    if configuration.console {
        Console<TributaryRequestContext>(
            client: client, registry: configuration.destinations, writer: writer, replica: configuration.readReplica,
            logger: logger
        )
        .register(on: router)
    }
    router.get("/health") { _, _ in
        do {
            _ = try await client.query("SELECT 1")
            return CollectionAPI.json(.ok, ["status": "ok"])
        } catch {
            return CollectionAPI.json(.serviceUnavailable, ["status": "unavailable", "error": .string("\(error)")])
        }
    }
    router.get("/metrics") { _, _ in
        metrics.queueDepth.record(Double(await writer.queueDepth))
        return metricsResponse(metrics.registry)
    }
    return Application(
        router: router,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "tributary"),
        onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
        logger: logger)
}

/// The collection endpoints' request handling.
struct CollectionAPI: Sendable {
    let configuration: ServerConfiguration
    let writer: EventWriter
    let keys: CredentialCache<Source>
    let webhookMappings: WebhookMappingStore
    let metrics: ServerMetrics
    let logger: Logger

    func handle(_ request: Request, type: CallType?) async -> Response {
        await respond(request, type: type)
    }

    /// `POST /v1/webhooks/{source}`: a tool's own payload, turned into calls by the source's mapping.
    func handleWebhook(_ request: Request, sourceName: String) async -> Response {
        await respondToWebhook(request, sourceName: sourceName)
    }

    private func respond(_ request: Request, type: CallType?) async -> Response {
        let limits = configuration.limits
        let receivedAt = Date()
        // 1. The body, bounded before and after decompression.
        let body: [UInt8]
        switch await readBody(request) {
        case .success(let bytes): body = bytes
        case .failure(let failure): return failure.response
        }
        // 2. Authenticate by header first, so unknown callers cost no parsing.
        var source: Source?
        let headerKey = Self.basicAuthUser(request.headers[.authorization])
        if let headerKey {
            guard let found = await authenticate(headerKey) else { return unauthorized() }
            source = found
        }
        // 3. Parse and validate.
        let parsed: SegmentParser.Parsed
        do {
            parsed = try SegmentParser(limits: limits).parse(body, type: type, receivedAt: receivedAt)
        } catch let rejected as RequestRejection {
            metrics.rejected(rejected.code)
            return rejection(rejected.code, rejected.message)
        } catch {
            return rejection("invalid_request", "\(error)")
        }
        if source == nil {
            guard let key = parsed.writeKey, let found = await authenticate(key) else { return unauthorized() }
            source = found
        }
        for issue in parsed.issues { metrics.rejected(issue.field.isEmpty ? "invalid_event" : "invalid_\(issue.field)") }
        if parsed.events.isEmpty {
            let message =
                parsed.issues.isEmpty ? "the batch is empty" : parsed.issues.prefix(20).map(\.description).joined(separator: "; ")
            return Self.json(
                .badRequest,
                [
                    "success": false, "code": "invalid_event", "error": .string(message),
                    "rejected": .array(parsed.issues.prefix(100).map(Self.issueObject)),
                ])
        }
        // 4. Store durably; answer only after the commit.
        return await store(parsed.events, source: source!, issues: parsed.issues)
    }

    /// A response to send instead of handling the request.
    struct EarlyResponse: Error {
        var response: Response
    }

    /// The request body, inflated if gzipped; bounded by the batch limit before and after decompression.
    func readBody(_ request: Request) async -> Result<[UInt8], EarlyResponse> {
        let limits = configuration.limits
        var body: [UInt8]
        do {
            var buffer = try await request.body.collect(upTo: limits.maxBatchBytes)
            body = buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch {
            return .failure(
                EarlyResponse(
                    response: rejection(
                        "request_too_large", "the request body is larger than the limit of \(limits.maxBatchBytes) bytes (500 KB)"
                    )))
        }
        switch request.headers[.contentEncoding]?.lowercased() {
        case nil, "identity":
            return .success(body)
        case "gzip", "x-gzip", "deflate":
            do {
                return .success(try Gzip.inflate(body, limit: limits.maxBatchBytes))
            } catch Gzip.Failure.tooLarge {
                return .failure(
                    EarlyResponse(
                        response: rejection(
                            "request_too_large",
                            "the decompressed body is larger than the limit of \(limits.maxBatchBytes) bytes (500 KB)")))
            } catch {
                return .failure(EarlyResponse(response: rejection("invalid_gzip", "the body is not valid gzip: \(error)")))
            }
        case let other?:
            return .failure(
                EarlyResponse(
                    response: rejection(
                        "unsupported_encoding", "Content-Encoding '\(other)' is not supported; send gzip or nothing",
                        status: .unsupportedMediaType)))
        }
    }

    private func respondToWebhook(_ request: Request, sourceName: String) async -> Response {
        let receivedAt = Date()
        let key = Self.basicAuthUser(request.headers[.authorization]) ?? request.uri.queryParameters.get("writeKey")
        guard let key, let source = await authenticate(key), source.name == sourceName else { return unauthorized() }
        let body: [UInt8]
        switch await readBody(request) {
        case .success(let bytes): body = bytes
        case .failure(let failure): return failure.response
        }
        let mapping: WebhookMapping?
        do {
            mapping = try await webhookMappings.mapping(sourceID: source.id)
        } catch {
            logger.error("webhook mapping lookup failed", metadata: ["error": "\(error)"])
            return Self.json(.serviceUnavailable, ["success": false, "code": "storage_unavailable", "error": "retry"])
        }
        guard let mapping else {
            return Self.json(
                .notFound,
                [
                    "success": false, "code": "no_mapping",
                    "error": .string(
                        "the source '\(sourceName)' has no webhook mapping; apply one with `tributary webhooks apply FILE`"),
                ])
        }
        let parser = SegmentParser(limits: configuration.limits)
        var events: [IncomingEvent] = []
        var issues: [ValidationIssue] = []
        do {
            let payload = try JSONParser.parse(body)
            for (index, call) in try mapping.calls(for: payload, rawPayload: body).enumerated() {
                do {
                    events.append(try parser.call(call, index: mapping.each == nil ? nil : index, receivedAt: receivedAt))
                } catch let issue as ValidationIssue {
                    issues.append(issue)
                }
            }
        } catch let error as JSONParseError {
            metrics.rejected("invalid_json")
            return rejection("invalid_json", error.description)
        } catch let issue as ValidationIssue {
            issues.append(issue)
        } catch {
            return rejection("invalid_request", "\(error)")
        }
        for issue in issues { metrics.rejected(issue.field.isEmpty ? "invalid_event" : "invalid_\(issue.field)") }
        guard !events.isEmpty else {
            return Self.json(
                .badRequest,
                [
                    "success": false, "code": "invalid_event",
                    "error": .string(
                        issues.isEmpty
                            ? "the payload maps to no calls" : issues.prefix(20).map(\.description).joined(separator: "; ")),
                ])
        }
        return await store(events, source: source, issues: issues)
    }

    /// Writes validated events and answers: 200 once committed, 503 with Retry-After when overloaded or unavailable.
    private func store(_ events: [IncomingEvent], source: Source, issues: [ValidationIssue]) async -> Response {
        do {
            let outcome = try await writer.write(events, sourceID: source.id)
            var answer: [(String, JSONValue)] = [
                ("success", true), ("stored", .number(String(outcome.stored))),
                ("duplicates", .number(String(outcome.duplicates))),
            ]
            if !issues.isEmpty { answer.append(("rejected", .array(issues.prefix(100).map(Self.issueObject)))) }
            return Self.json(.ok, .object(answer))
        } catch let overloaded as EventWriter.Overloaded {
            metrics.rejected("overloaded", count: events.count)
            var response = Self.json(
                .serviceUnavailable, ["success": false, "code": "overloaded", "error": .string(overloaded.description)])
            response.headers[.retryAfter] = "1"
            return response
        } catch {
            logger.error("could not store events", metadata: ["error": "\(error)"])
            metrics.rejected("storage_unavailable", count: events.count)
            var response = Self.json(
                .serviceUnavailable,
                [
                    "success": false, "code": "storage_unavailable", "error": "the events could not be stored; retry",
                ])
            response.headers[.retryAfter] = "5"
            return response
        }
    }

    private func authenticate(_ key: String) async -> Source? {
        do {
            return try await keys.value(for: key)
        } catch {
            logger.error("write key lookup failed", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func unauthorized() -> Response {
        metrics.rejected("unauthorized")
        var response = Self.json(
            .unauthorized, ["success": false, "code": "unauthorized", "error": "unknown or disabled write key"])
        response.headers[.wwwAuthenticate] = "Basic realm=\"tributary\""
        return response
    }

    private func rejection(_ code: String, _ message: String, status: HTTPResponse.Status = .badRequest) -> Response {
        Self.json(status, ["success": false, "code": .string(code), "error": .string(message)])
    }

    static func issueObject(_ issue: ValidationIssue) -> JSONValue {
        var object: [(String, JSONValue)] = [("field", .string(issue.path)), ("error", .string(issue.message))]
        if let index = issue.index { object.append(("index", .number(String(index)))) }
        return .object(object)
    }

    /// The write key from `Authorization: Basic base64(key:)` (the colon and empty password optional).
    static func basicAuthUser(_ header: String?) -> String? {
        guard let header, header.lowercased().hasPrefix("basic ") else { return nil }
        let encoded = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard let data = Data(base64Encoded: encoded), let text = String(data: data, encoding: .utf8) else { return nil }
        let user = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        return user.isEmpty ? nil : user
    }

    /// A JSON response: `object` written by the same JSON layer that parses requests (``JSONValue``).
    static func json(_ status: HTTPResponse.Status, _ object: JSONValue) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: object.serialized)))
    }
}
