import Foundation
import Testing
@testable import TributaryModel

/// Mutated and random request bodies never crash the parser: each is either parsed or refused with an error.
@Suite struct ParserFuzzTests {
    struct Generator {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(max(bound, 1)))
        }
    }

    static let seed = Array(
        #"""
        {"batch":[{"type":"track","userId":12,"event":"Order \u00e9 \"x\"","properties":{"n":-1.5e3,"a":[true,null,{}]},
        "timestamp":"2026-11-25T10:00:00.123+02:00","messageId":"m"},{"type":"identify","anonymousId":"a","traits":{"e":"\ud83c\udf0a"}}],
        "context":{"ip":"1.2.3.4"},"sentAt":"2026-11-25T10:00:01Z"}
        """#.utf8)

    @Test func mutatedBodiesAreParsedOrRefused() {
        var random = Generator(state: 20_261_126)
        let parser = SegmentParser()
        let interesting: [UInt8] =
            Array("{}[]\",:\\0123456789eE+-.tfnu \u{7F}".utf8) + [0x00, 0x1F, 0x80, 0xBF, 0xC3, 0xE2, 0xF0, 0xFF]
        var parsed = 0
        var refused = 0
        for _ in 0..<20_000 {
            var body = Self.seed
            for _ in 0..<(1 + random.next(4)) {
                let position = random.next(body.count)
                switch random.next(4) {
                case 0: body[position] = interesting[random.next(interesting.count)]
                case 1: body.insert(interesting[random.next(interesting.count)], at: position)
                case 2: body.remove(at: position)
                default: body = Array(body[..<position])
                }
                if body.isEmpty { break }
            }
            do {
                _ = try parser.parse(body, type: nil, receivedAt: Date())
                parsed += 1
            } catch {
                refused += 1
            }
        }
        #expect(parsed + refused == 20_000)
        #expect(parsed > 0 && refused > 0, "the mutations should produce both outcomes")
    }

    @Test func randomBytesAreRefused() {
        var random = Generator(state: 7)
        for _ in 0..<5_000 {
            let body = (0..<random.next(200)).map { _ in UInt8(random.next(256)) }
            #expect(throws: (any Error).self) { try SegmentParser().parse(body, type: .track, receivedAt: Date()) }
        }
    }
}
