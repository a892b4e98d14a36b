import Foundation
import Testing
@testable import TributaryServer

/// Inflating untrusted bodies: round trips, truncations, corruption and bombs.
@Suite struct GzipTests {
    @Test func roundTripsAndRefusesWhatIsNotGzip() throws {
        let text = Array(String(repeating: #"{"type":"track","event":"é"}"#, count: 1000).utf8)
        let compressed = try gzip(text)
        #expect(try Gzip.inflate(compressed, limit: 1 << 20) == text)
        #expect(throws: Gzip.Failure.self) { try Gzip.inflate(compressed, limit: text.count - 1) }
        for cut in [1, 10, compressed.count / 2, compressed.count - 1] {
            #expect(throws: Gzip.Failure.self) { try Gzip.inflate(Array(compressed[..<cut]), limit: 1 << 20) }
        }
        var state: UInt64 = 99
        for _ in 0..<2_000 {
            var corrupted = compressed
            state = state &* 6_364_136_223_846_793_005 &+ 1
            let position = Int((state >> 33) % UInt64(corrupted.count))
            corrupted[position] ^= UInt8(truncatingIfNeeded: state >> 13) | 1
            // Either it still inflates (a flip in a literal run) or it is refused; it never crashes.
            _ = try? Gzip.inflate(corrupted, limit: 1 << 20)
        }
        #expect(throws: Gzip.Failure.self) { try Gzip.inflate(Array("plain text".utf8), limit: 1 << 20) }
        #expect(throws: Gzip.Failure.self) { try Gzip.inflate([], limit: 1 << 20) }
    }
}
