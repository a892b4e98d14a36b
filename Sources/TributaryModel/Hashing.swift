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
