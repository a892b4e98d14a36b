import Foundation
import Postgres
import Testing
@testable import TributaryModel

/// Predictive traits in the computed traits file, without a database: parsing among aggregates, the canonical form,
/// refusals that name the field, and what segments compile them to.
@Suite struct PredictiveTraitTests {
    static let file = #"""
        {"computedTraits": [
          {"name": "churn_30d", "kind": "prediction", "predict": "churn", "within": {"days": 30}},
          {"name": "orders", "aggregate": "count", "events": ["Order Completed"]},
          {"name": "buys_14d", "kind": "prediction", "predict": "goal", "event": "Order Completed", "within": {"days": 14}},
          {"name": "clv", "kind": "prediction", "predict": "predicted_lifetime_value", "within": {"days": 180}},
          {"name": "alive", "kind": "prediction", "predict": "probability_alive"},
          {"name": "next_products", "kind": "prediction", "predict": "recommended_products", "top": 3,
           "weights": {"Product Viewed": 1, "Order Completed": 4}, "halfLifeDays": 14},
          {"name": "views", "kind": "aggregate", "aggregate": "count", "events": ["Product Viewed"]}
        ]}
        """#

    @Test func predictionsParseAmongAggregatesAndKeepACanonicalForm() throws {
        let definitions = try ComputedTraitDefinitions.parse(Data(Self.file.utf8))
        #expect(definitions.computedTraits.map(\.name) == ["orders", "views"])
        #expect(definitions.predictions.map(\.name) == ["churn_30d", "buys_14d", "clv", "alive", "next_products"])
        #expect(
            definitions.prediction("buys_14d") == PredictiveTrait("buys_14d", .goal, event: "Order Completed", within: .days(14)))
        #expect(definitions.prediction("clv")?.source == .customerBase(column: "predicted_lifetime_value"))
        #expect(definitions.prediction("churn_30d")?.source == .propensity(name: "churn_30d"))
        #expect(definitions.prediction("next_products")?.source == .recommendations(top: 3))
        #expect(definitions.prediction("next_products")?.valueType == .array)
        #expect(definitions.prediction("next_products")?.halfLifeDays == 14)
        // The canonical form marks predictions and reads back to the same definitions.
        let canonical = try definitions.canonicalJSON()
        #expect(String(decoding: canonical, as: UTF8.self).contains(#""kind" : "prediction""#))
        #expect(try ComputedTraitDefinitions.parse(canonical) == definitions)
        // A file without predictions keeps the canonical form it always had (stored checksums do not change).
        let plain = try ComputedTraitDefinitions.parse(
            Data(#"{"computedTraits": [{"name": "orders", "aggregate": "count"}]}"#.utf8))
        #expect(!String(decoding: try plain.canonicalJSON(), as: UTF8.self).contains("kind"))
    }

    @Test(arguments: [
        (#"{"name": "x", "kind": "model", "predict": "churn"}"#, "computedTraits[0].kind: unknown kind 'model'"),
        (#"{"name": "x", "kind": "prediction", "predict": "ltv"}"#, "computedTraits[0].predict: unknown prediction 'ltv'"),
        (#"{"name": "x", "kind": "prediction", "predict": "churn"}"#, "(prediction 'x').within: required"),
        (
            #"{"name": "x", "kind": "prediction", "predict": "churn", "within": {"days": 120}}"#,
            "(prediction 'x').within.days: a propensity window is 7 to 90 days, got 120"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "goal", "within": {"days": 30}}"#,
            "(prediction 'x').event: the goal event is required"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "churn", "event": "A", "within": {"days": 30}}"#,
            "(prediction 'x').event: 'churn' takes no event"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "probability_alive", "top": 3}"#,
            "(prediction 'x').top: 'probability_alive' takes no top"
        ),
        (#"{"name": "x", "kind": "prediction", "predict": "expected_spend", "within": {"days": 9}}"#, "takes no within"),
        (
            #"{"name": "x", "kind": "prediction", "predict": "recommended_products", "top": 500}"#,
            ".top: 1 to 100 products, got 500"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "recommended_products", "weights": {"A": 0}}"#,
            "weights: event 'A' with weight 0.0"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "recommended_products", "halfLifeDays": 0}"#,
            ".halfLifeDays: more than 0 and at most 3660 days, got 0.0"
        ),
        (
            #"{"name": "x", "kind": "prediction", "predict": "churn", "within": {"days": 30}, "halfLifeDays": 7}"#,
            "takes no halfLifeDays"
        ),
        (#"{"name": "X", "kind": "prediction", "predict": "probability_alive"}"#, "'X' is not a valid prediction name"),
        (#"{"name": "_x", "kind": "prediction", "predict": "probability_alive"}"#, "'_x' is not a valid prediction name"),
        (#"{"name": "event_count", "kind": "prediction", "predict": "probability_alive"}"#, "reserved for a built-in column"),
        (
            #"{"name": "x", "kind": "prediction", "predict": "probability_alive", "aggregate": "count"}"#,
            "computedTraits[0].aggregate: unknown key"
        ),
        (
            #"{"name": "x", "kind": "aggregate", "aggregate": "count", "predict": "churn"}"#,
            "computedTraits[0].predict: unknown key"
        ),
    ])
    func badPredictionsAreNamed(entry: String, fragment: String) {
        Self.expectRefused(#"{"computedTraits": [\#(entry)]}"#, containing: fragment) {
            _ = try ComputedTraitDefinitions.parse($0)
        }
    }

    /// `parse` must refuse `json` with a ``ProfileError`` whose message contains `fragment`.
    static func expectRefused(_ json: String, containing fragment: String, _ parse: (Data) throws -> Void) {
        do {
            try parse(Data(json.utf8))
            Issue.record("\(json) must be refused")
        } catch let error as ProfileError {
            #expect(error.description.contains(fragment), "\(json): \(error)")
        } catch {
            Issue.record("\(json): \(error)")
        }
    }

    @Test func namesAndModelsAreNotDefinedTwice() {
        let cases = [
            (
                #"[{"name": "x", "aggregate": "count"}, {"name": "x", "kind": "prediction", "predict": "probability_alive"}]"#,
                "'x' is already the name of computedTraits[0]"
            ),
            (
                #"[{"name": "x", "kind": "prediction", "predict": "probability_alive"}, {"name": "x", "kind": "prediction", "predict": "expected_spend"}]"#,
                "'x' is the name of two predictions"
            ),
            (
                #"[{"name": "a", "kind": "prediction", "predict": "predicted_lifetime_value", "within": {"days": 90}}, {"name": "b", "kind": "prediction", "predict": "predicted_lifetime_value", "within": {"days": 365}}]"#,
                "'a' already predicts predicted_lifetime_value"
            ),
            (
                #"[{"name": "rfm_score", "kind": "prediction", "predict": "probability_alive"}]"#,
                "reserved for a built-in column"
            ),
        ]
        for (entries, fragment) in cases {
            let rfm = entries.contains("rfm_score") ? #", "rfm": {"enabled": true}"# : ""
            Self.expectRefused(#"{"computedTraits": \#(entries)\#(rfm)}"#, containing: fragment) {
                _ = try ComputedTraitDefinitions.parse($0)
            }
        }
    }

    @Test func theGeneratedCatalogSourceHasAConstantPerComputedAndPredictiveTrait() throws {
        let computed = try ComputedTraitDefinitions.parse(Data(Self.file.utf8))
        let source = CatalogSwiftGenerator.source(for: Catalog(), computed: computed)
        for line in [
            "public enum ComputedTraits {",
            #"    public static let churn30d = TributaryModel.Computed<Swift.Double>("churn_30d")"#,
            #"    /// Predicted: goal 'Order Completed' within 14 days (its percentile: `Prediction("buys_14d").percentile`)."#,
            #"    public static let nextProducts = TributaryModel.Computed<TributaryModel.JSONArray>("next_products")"#,
            #"    public static let orders = TributaryModel.Computed<Swift.Int>("orders")"#,
        ] {
            #expect(source.contains(line + "\n"), "\(line)\n\(source)")
        }
        // Without computed traits the source is what it was.
        #expect(!CatalogSwiftGenerator.source(for: Catalog()).contains("ComputedTraits"))
    }

    @Test func theSegmentsThatReadScoresAreFoundThroughReferences() throws {
        let computed = try ComputedTraitDefinitions.parse(Data(Self.file.utf8))
        let segments = try SegmentDefinitions.parse(
            Data(
                #"""
                {"segments": [
                  {"name": "plain", "conditions": [{"computed": "orders", "op": ">", "value": 1}]},
                  {"name": "scored", "conditions": [{"prediction": "probability_alive", "op": "<", "value": 0.5}]},
                  {"name": "trait", "conditions": [{"not": {"computed": "churn_30d", "op": ">", "value": 0.5}}]},
                  {"name": "nested", "conditions": [{"anyOf": [{"segment": "plain"}, {"segment": "scored"}]}]},
                  {"name": "neither", "conditions": [{"segment": "plain"}]}
                ]}
                """#.utf8), computed: computed)
        #expect(segments.readingPredictions(computed: computed) == ["scored", "trait", "nested"])
    }

    @Test func segmentsCompareAPredictiveTraitAsAComputedTrait() throws {
        let computed = try ComputedTraitDefinitions.parse(Data(Self.file.utf8))
        let segments = try SegmentDefinitions.parse(
            Data(
                #"""
                {"segments": [
                  {"name": "at_risk", "conditions": [{"computed": "churn_30d", "op": ">", "value": 0.8},
                                                      {"prediction": "churn_30d", "percentile": true, "op": ">=", "value": 90}],
                   "fields": [{"name": "clv", "computed": "clv"}, {"name": "next", "computed": "next_products"}]},
                  {"name": "tent_fans", "conditions": [{"computed": "next_products", "op": "contains", "value": "tent"},
                                                        {"prediction": "alive", "op": "<", "value": 0.5}]}
                ]}
                """#.utf8), catalog: nil, computed: computed)
        let compiler = SegmentCompiler(segments, computed: computed)
        let risk = try compiler.select("at_risk").inlined().sql
        #expect(
            risk.contains(
                "x.probability FROM cdp.profile_propensities AS x WHERE x.profile_id = p.profile_id AND x.name = 'churn_30d') > 0.8"
            ), "\(risk)")
        #expect(risk.contains("x.percentile FROM cdp.profile_propensities"), "\(risk)")
        #expect(risk.contains(#"x."predicted_lifetime_value" FROM cdp.profile_predictions"#), "\(risk)")
        #expect(risk.contains("x.product_ids[1:3]") && risk.contains("cdp.popular_products AS x WHERE x.rank <= 3"), "\(risk)")
        let fans = try compiler.select("tent_fans").inlined().sql
        #expect(fans.contains("'tent' = ANY (coalesce("), "\(fans)")
        #expect(fans.contains(#"x."probability_alive" FROM cdp.profile_predictions"#), "\(fans)")

        for (condition, fragment) in [
            (#"{"computed": "churn_30d", "op": "contains", "value": "x"}"#, "a prediction is compared with =, !="),
            (#"{"computed": "churn_30d", "op": ">", "value": "high"}"#, "is compared with a number"),
            (#"{"computed": "next_products", "op": ">", "value": 1}"#, "is a list of products"),
            (#"{"prediction": "next_products", "op": ">", "value": 1}"#, "is a list of products, not a number"),
            (#"{"prediction": "clv", "percentile": true, "op": ">", "value": 1}"#, "'clv' has no percentile"),
            (#"{"computed": "churn_30d", "op": "exists", "value": 1}"#, "'exists' takes no value"),
            (
                #"{"trait": "churn_30d", "op": ">", "value": 0.8}"#,
                "'churn_30d' is a predictive trait, not a trait of identify calls"
            ),
        ] {
            Self.expectRefused(#"{"segments": [{"name": "s", "conditions": [\#(condition)]}]}"#, containing: fragment) {
                _ = try SegmentDefinitions.parse($0, catalog: nil, computed: computed)
            }
        }
    }
}
