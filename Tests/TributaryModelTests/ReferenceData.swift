import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014; the same sequence as TributaryFixtures.SeededRandom: `next()`, and `unit()`
/// for `uniform()`): a small seeded generator, so the reference data set is the same on every
/// platform and can be exported for scikit-learn (see `Scripts/sklearn_reference.py`).
struct SplitMix64 {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in [0, 1) with 53 random bits.
    mutating func uniform() -> Double {
        Double(next() >> 11) * 0x1p-53
    }
}

/// The data set the scikit-learn reference values were computed on: 2,000 customers, 5 features of very different
/// scales, one constant and one strongly predictive, labels drawn from a known logistic model.
enum ReferenceData {
    static let names = ["tenureDays", "sessions", "plan", "engagement", "spend"]
    static let rows = 2_000

    /// The row-major feature values and the labels.
    static func make() -> (values: [Double], labels: [Bool]) {
        var generator = SplitMix64(state: 0x5EED_0F_7121_B0A7)
        var values: [Double] = []
        values.reserveCapacity(rows * names.count)
        var labels: [Bool] = []
        labels.reserveCapacity(rows)
        for _ in 0..<rows {
            let tenureDays = (generator.uniform() * 1_000).rounded(.down)  // 0…999, standard deviation ≈ 289
            let sessions = (generator.uniform() * 20).rounded(.down) + (generator.uniform() * 20).rounded(.down)
            let plan = 3.0  // constant
            var sum = 0.0
            for _ in 0..<4 { sum += generator.uniform() }
            let engagement = (sum - 2) * 0.01  // standard deviation ≈ 0.0058: the strong predictor
            let spend = -log1p(-generator.uniform()) * 80  // exponential, mean 80
            let eta =
                -0.8 + 2.5 * engagement / 0.005_773_5 + 0.3 * (tenureDays - 500) / 289 - 0.2 * (sessions - 19) / 8
                + 0.001 * (spend - 80)
            let probability = 1 / (1 + exp(-eta))
            values.append(contentsOf: [tenureDays, sessions, plan, engagement, spend])
            labels.append(generator.uniform() < probability)
        }
        return (values, labels)
    }

    /// Scores with many ties for the metric references: (sessions + 1) / 41, in (0, 1), 39 distinct values.
    static func tiedScores(_ values: [Double]) -> [Double] {
        (0..<rows).map { (values[$0 * names.count + 1] + 1) / 41 }
    }
}
