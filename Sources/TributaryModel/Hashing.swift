import Crypto
import Foundation

/// SHA-256 in lower-case hex: migration checksums, stored write keys, content-derived message ids.
///
/// - Parameter bytes: how many leading bytes of the digest to keep (32, all of it, by default).
package func sha256Hex(_ data: some DataProtocol, bytes: Int = 32) -> String {
    let hex = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes * 2)
    for byte in SHA256.hash(data: data).prefix(bytes) {
        out.append(hex[Int(byte >> 4)])
        out.append(hex[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// `count` bytes from the system's cryptographically secure generator, in unpadded base64url: API token secrets,
/// console sessions and their CSRF tokens.
package func randomBase64URL(bytes count: Int = 32) -> String {
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    return Data(bytes).base64EncodedString()
        .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

/// RFC 3986's unreserved characters (ASCII letters, digits, `-._~`): what percent-encoding leaves as it is.
private let unreservedCharacters = CharacterSet(
    charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

/// `text` with everything but unreserved characters percent-encoded (as UTF-8): a value in a URL path or query, or in
/// a form body.
package func percentEncoded(_ text: String) -> String {
    text.addingPercentEncoding(withAllowedCharacters: unreservedCharacters) ?? text
}
