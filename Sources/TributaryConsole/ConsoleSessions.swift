import Foundation
import TributaryModel
import TributaryProfiles

/// Signed-in console sessions, kept in this process's memory (a restart signs everyone out; each `serve` process of
/// several has its own). A session holds the API token it was opened with (re-checked against `cdp.api_tokens` on each
/// request through a short cache, so a revoked token ends it), its CSRF token, and expires after ``lifetime``.
final class ConsoleSessions: @unchecked Sendable {
    struct Session: Sendable {
        var id: String
        var token: APIToken
        /// The secret the session was opened with, to re-check the token (kept in memory only).
        var secret: String
        /// Sent in every form as `csrf` and compared on every action.
        var csrf: String
        var expires: Date
    }

    static let cookie = "tributary_session"
    static let lifetime: TimeInterval = 8 * 3600
    private let lock = NSLock()
    private var sessions: [String: Session] = [:]

    func open(token: APIToken, secret: String) -> Session {
        let session = Session(
            id: Self.random(), token: token, secret: secret, csrf: Self.random(), expires: Date() + Self.lifetime)
        lock.withLock {
            let now = Date()
            sessions = sessions.filter { $0.value.expires > now }
            sessions[session.id] = session
        }
        return session
    }

    /// The live session named by the request's `Cookie` header, if any.
    func session(cookieHeader: String?) -> Session? {
        guard let id = Self.cookie(named: Self.cookie, in: cookieHeader) else { return nil }
        return lock.withLock {
            guard let session = sessions[id], session.expires > Date() else {
                sessions[id] = nil
                return nil
            }
            return session
        }
    }

    func close(_ id: String) { lock.withLock { sessions[id] = nil } }

    /// 32 random bytes, base64url.
    static func random() -> String { randomBase64URL() }

    /// A cookie's value from a `Cookie` header (`a=1; b=2`).
    static func cookie(named name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
            if pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces) == name {
                return pair[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }

    /// Compares two secrets in time independent of where they differ.
    static func same(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}
