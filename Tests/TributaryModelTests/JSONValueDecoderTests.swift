import Foundation
import Testing
@testable import TributaryModel

/// The decoder behind every `Codable` definitions file: the same parser as request bodies, exact integers, path-named
/// errors, repeated keys refused.
@Suite struct JSONValueDecoderTests {
    struct Sample: Decodable, Equatable {
        var name: String
        var count: Int
        var big: Int64?
        var ratio: Double?
        var tags: [String]?
        var nested: [String: [Int]]?
    }

    func decode(_ json: String) throws -> Sample { try JSONValueDecoder().decode(Sample.self, from: Data(json.utf8)) }

    func error(_ json: String) -> String {
        do {
            _ = try decode(json)
            return "no error"
        } catch let error as DecodingError {
            return describe(error)
        } catch {
            return "\(error)"
        }
    }

    @Test func decodesNestedValuesAndKeepsIntegersExact() throws {
        let sample = try decode(
            #"{"name": "a", "count": 3.0, "big": 9007199254740993, "ratio": 0.1, "tags": ["x", "y"], "nested": {"k": [1, 2e0]}}"#)
        #expect(
            sample
                == Sample(name: "a", count: 3, big: 9_007_199_254_740_993, ratio: 0.1, tags: ["x", "y"], nested: ["k": [1, 2]]))
        #expect(try decode(#"{"name": "a", "count": 1, "big": null}"#).big == nil)
    }

    @Test func errorsNameThePathAndTheProblem() {
        #expect(error(#"{"name": "a", "count": 3.5}"#) == "count: must be an integer")
        #expect(error(#"{"name": "a", "count": "3"}"#) == "count: must be an integer")
        #expect(error(#"{"name": "a", "count": null}"#) == "count: must be an integer, got null")
        #expect(error(#"{"count": 1}"#) == "name: required")
        #expect(error(#"{"name": "a", "count": 1, "tags": ["x", 2]}"#) == "tags[1]: must be a string")
        #expect(error(#"{"name": "a", "count": 1, "nested": {"k": "no"}}"#) == "nested.k: must be a list")
        #expect(error(#"{"name": "a", "count": 1, "big": 9223372036854775808}"#) == "big: must be an integer")
        #expect(error(#"{"name": "a", "count": 1, "name": "b"}"#) == "name: given twice")
        #expect(error(#"["a"]"#) == "(document): must be an object")
        #expect(error(#"{"name": "a", "#).hasPrefix("(document): not valid JSON (invalid JSON at byte"))
    }
}
