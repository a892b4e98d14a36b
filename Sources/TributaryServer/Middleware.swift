import CoreMetrics
import Metrics
import Foundation
import HTTPTypes
import Hummingbird
import Prometheus
import TributaryProfiles

/// The request context of Tributary's HTTP APIs: what the middleware learned about a request before its handler runs.
public struct TributaryRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The API token the request was authorized with (set by ``TokenAuthMiddleware`` on the routes that take tokens).
    public var token: APIToken?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        token = nil
    }
}

/// Counts each request of the routes it wraps in `tributary_http_requests_total{route, status}` and, with
/// `duration`, records its latency. The route label is the first path component after `/v1/` of the matched route
/// (`batch`, `track`, `webhooks`, `profiles`, `privacy`, …). Put it outermost, so refused requests count too.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = TributaryRequestContext
    let metrics: ServerMetrics
    let duration: CoreMetrics.Timer?

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let route = Self.routeLabel(context.endpointPath ?? request.uri.path)
        do {
            let response = try await next(request, context)
            duration?.record(duration: ContinuousClock.now - started)
            metrics.request(route: route, status: response.status.code)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.request(route: route, status: status)
            throw error
        }
    }

    /// `/v1/profiles/{kind}/{value}` → `profiles`.
    static func routeLabel(_ path: String) -> String {
        let parts = path.split(separator: "/")
        guard parts.count >= 2, parts[0] == "v1" else { return parts.first.map(String.init) ?? "" }
        return String(parts[1])
    }
}

/// Lets through only requests with `Authorization: Bearer <API token>` whose token carries `scope` (`admin` covers
/// every scope), and puts the token in the context. Otherwise answers as ``AdminAuth`` does: the same 401 for a
/// missing, malformed, unknown or revoked token and for a write key; 403 naming the scope; 503 if the database is
/// unavailable. Nothing of the request is read before it passes.
struct TokenAuthMiddleware: RouterMiddleware {
    typealias Context = TributaryRequestContext
    let auth: AdminAuth
    let scope: APITokenScope

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        switch await auth.authorize(request, scope: scope) {
        case .success(let token):
            var context = context
            context.token = token
            return try await next(request, context)
        case .failure(let early):
            return early.response
        }
    }
}
