import Foundation
import TributaryModel
import Testing

/// Whether `a` and `b` agree to `relative` of the larger magnitude (exactly, when one of them is 0).
private func close(_ a: Double, _ b: Double, relative: Double) -> Bool {
    abs(a - b) <= relative * max(abs(a), abs(b))
}

/// The message of the error `body` throws, or nil when it throws none.
private func message(of body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        return "\(error)"
    }
}

/// scikit-learn's fit of one penalty on the reference data set.
struct SklearnReference: Sendable, CustomTestStringConvertible {
    var l2: Double
    /// `LogisticRegression(C=1/l2, tol=1e-12, max_iter=10000)` (default solver, lbfgs).
    var intercept: Double
    var coefficients: [Double]
    /// The same with `solver="newton-cholesky"`, which converges more tightly than lbfgs.
    var newtonIntercept: Double
    var newtonCoefficients: [Double]
    /// `log_loss(y, predict_proba(z)[:, 1])` on the training data.
    var trainingLogLoss: Double

    var testDescription: String { "l2 = \(l2)" }
}

// Reference values from scikit-learn 1.9.1 (numpy 2.4.6), computed by Scripts/sklearn_reference.py on the CSV that
// Scripts/export-reference-data.swift writes from ReferenceData.make(): StandardScaler() (population standard
// deviation, scale 1 for the constant column) then LogisticRegression(C=1/l2, tol=1e-12, max_iter=10000), with the
// intercept. The lbfgs and newton-cholesky solutions differ by at most 1.7e-8 (1.3e-7 relative); this fit agrees with
// newton-cholesky to 3e-11 relative.
let referenceMeans = [506.177, 19.0545, 3.0, -4.313429012608791e-05, 79.72875950534568]
let referenceScales = [288.20617042492324, 8.271730759037073, 1.0, 0.0058414519864417825, 78.46608376456511]
let sklearnReferences = [
    SklearnReference(
        l2: 1, intercept: -0.8180510314711065,
        coefficients: [0.2817393046459236, -0.28181777540816355, 0.0, 2.7412951637296734, 0.12994114018787278],
        newtonIntercept: -0.8180510310222008,
        newtonCoefficients: [0.28173930922188445, -0.28181778028562626, 0.0, 2.7412951598909836, 0.12994115714292256],
        trainingLogLoss: 0.3606462404489714),
    SklearnReference(
        l2: 25, intercept: -0.6832418810107342,
        coefficients: [0.21467883760880027, -0.21954963822641976, 0.0, 2.134240241527692, 0.09890889042705746],
        newtonIntercept: -0.6832418809582451,
        newtonCoefficients: [0.2146788376277879, -0.21954963815163792, 0.0, 2.134240241613233, 0.09890889028636932],
        trainingLogLoss: 0.36872938619079776),
]

@Suite("Logistic model fit")
struct LogisticModelFitTests {
    let matrix: FeatureMatrix
    let labels: [Bool]

    init() throws {
        let data = ReferenceData.make()
        matrix = try FeatureMatrix(names: ReferenceData.names, values: data.values)
        labels = data.labels
    }

    @Test("the reference data set is the one scikit-learn saw")
    func referenceData() {
        #expect(matrix.rows == 2_000 && matrix.columns == 5)
        #expect(labels.count(where: { $0 }) == 809)
    }

    @Test("coefficients, intercept and standardization match scikit-learn", arguments: sklearnReferences)
    func matchesScikitLearn(reference: SklearnReference) throws {
        let model = try LogisticModel.fit(matrix, labels: labels, l2: reference.l2)
        for j in 0..<5 {
            #expect(close(model.means[j], referenceMeans[j], relative: 1e-12), "mean of \(model.names[j])")
            #expect(close(model.scales[j], referenceScales[j], relative: 1e-12), "scale of \(model.names[j])")
        }
        #expect(close(model.intercept, reference.intercept, relative: 1e-6))
        #expect(close(model.intercept, reference.newtonIntercept, relative: 1e-9))
        for j in 0..<5 {
            #expect(
                close(model.coefficients[j], reference.coefficients[j], relative: 1e-6),
                "\(model.names[j]): \(model.coefficients[j]) vs lbfgs \(reference.coefficients[j])")
            #expect(
                close(model.coefficients[j], reference.newtonCoefficients[j], relative: 1e-9),
                "\(model.names[j]): \(model.coefficients[j]) vs newton-cholesky \(reference.newtonCoefficients[j])")
        }
        #expect(model.coefficients[2] == 0, "the constant column is ignored")
        #expect(model.l2 == reference.l2)
        #expect(model.iterations > 0 && model.iterations < 20)
        let loss = ClassifierMetrics.logLoss(probabilities: model.probabilities(matrix), labels: labels)
        #expect(close(loss, reference.trainingLogLoss, relative: 1e-9))
    }

    @Test("the fit is a stationary point of the documented objective")
    func stationary() throws {
        let l2 = 3.0
        let model = try LogisticModel.fit(matrix, labels: labels, l2: l2)
        let probabilities = model.probabilities(matrix)
        // ∂/∂β₀ = Σ (y − μ); ∂/∂βⱼ = Σ (y − μ) zⱼ − l2 βⱼ.
        var gradient = [Double](repeating: 0, count: 6)
        for i in 0..<matrix.rows {
            let residual = (labels[i] ? 1 : 0) - probabilities[i]
            gradient[0] += residual
            for j in 0..<5 {
                gradient[j + 1] += residual * (matrix[i, j] - model.means[j]) / model.scales[j]
            }
        }
        for j in 0..<5 { gradient[j + 1] -= l2 * model.coefficients[j] }
        #expect(gradient.allSatisfy { abs($0) < 1e-7 }, "gradient \(gradient)")
    }

    @Test("scoring: one row and the whole matrix agree, and the model survives a JSON round trip")
    func scoring() throws {
        let model = try LogisticModel.fit(matrix, labels: labels)
        let all = model.probabilities(matrix)
        for i in [0, 1, 999, 1_999] {
            #expect(model.probability(matrix.row(i)) == all[i])
            #expect(model.probability(Array(matrix.row(i))) == all[i])
        }
        #expect(all.allSatisfy { $0 > 0 && $0 < 1 })
        #expect(model.probability([1, 2, 3]).isNaN, "a row of the wrong length")
        #expect(model.probability([500, 20, 3, .infinity, 80]).isNaN, "an infinite feature")
        #expect(model.probability([500, .nan, 3, 0, 80]).isNaN, "a missing feature")
        let bad = try FeatureMatrix(names: matrix.names, values: [500, 20, 3, -.infinity, 80, 500, 20, 3, 0, 80])
        let badScores = model.probabilities(bad)
        #expect(badScores[0].isNaN && badScores[1] == model.probability([500, 20, 3, 0, 80]))
        let decoded = try JSONDecoder().decode(LogisticModel.self, from: JSONEncoder().encode(model))
        #expect(decoded == model)

        let renamed = try FeatureMatrix(names: ["a", "b", "c", "d", "e"], values: matrix.values)
        #expect(model.probabilities(renamed).allSatisfy { $0.isNaN })
        #expect(
            message { try model.checkFeatures(renamed) }
                == "the model was fitted on the features [\"tenureDays\", \"sessions\", \"plan\", \"engagement\", "
                + "\"spend\"] but the matrix has the features [\"a\", \"b\", \"c\", \"d\", \"e\"]")
        try model.checkFeatures(matrix)
    }

    @Test("a fit that runs out of iterations says so")
    func didNotConverge() {
        #expect(throws: PropensityError.self) { try LogisticModel.fit(matrix, labels: labels, maxIterations: 1) }
        let text = message { _ = try LogisticModel.fit(matrix, labels: labels, maxIterations: 1) } ?? ""
        #expect(text.hasPrefix("the propensity model's fit did not converge after 1 Newton iterations"), "\(text)")
    }
}

@Suite("Logistic model edge cases")
struct LogisticModelEdgeTests {
    @Test("perfectly separable classes converge with an L2 penalty")
    func perfectSeparation() throws {
        var generator = SplitMix64(state: 7)
        var rows: [[Double]] = []
        var labels: [Bool] = []
        for _ in 0..<400 {
            let signal = generator.uniform() * 2 - 1
            rows.append([signal, generator.uniform() * 10])
            labels.append(signal > 0)
        }
        let x = try FeatureMatrix(names: ["signal", "noise"], rows: rows)
        for l2 in [1.0, 0.01] {
            let model = try LogisticModel.fit(x, labels: labels, l2: l2)
            #expect(model.coefficients.allSatisfy(\.isFinite) && model.intercept.isFinite)
            #expect(model.coefficients[0] > 5, "l2 = \(l2): \(model.coefficients)")
            #expect(model.iterations < 50)
            // The penalty keeps the scale finite, so the noise feature can swap a pair or two near the boundary.
            #expect((ClassifierMetrics.auc(scores: model.probabilities(x), labels: labels) ?? 0) > 0.999)
            print(
                "separable, l2 = \(l2): intercept \(model.intercept), coefficients \(model.coefficients), "
                    + "\(model.iterations) steps")
        }
    }

    @Test("a constant column gets scale 1 and coefficient 0")
    func constantColumn() throws {
        let x = try FeatureMatrix(
            names: ["constant", "signal"], rows: [[5, 1], [5, 2], [5, 3], [5, 4], [5, 5], [5, 6]])
        let model = try LogisticModel.fit(x, labels: [false, true, false, false, true, true], l2: 0.5)
        #expect(model.means[0] == 5 && model.scales[0] == 1 && model.coefficients[0] == 0)
        #expect(model.coefficients[1] > 0)
        // Its value at scoring time does not matter.
        #expect(model.probability([5, 3.5]) == model.probability([-100, 3.5]))
    }

    @Test("a feature-less matrix fits the base rate")
    func interceptOnly() throws {
        let x = try FeatureMatrix(names: [], rows: [[], [], [], []])
        let model = try LogisticModel.fit(x, labels: [true, false, false, false], l2: 1)
        #expect(abs(model.probability([Double]()) - 0.25) < 1e-12)
    }

    @Test("a non-finite feature is named with its row")
    func nonFinite() throws {
        var rows = [[Double]](repeating: [1, 2], count: 5)
        rows[0] = [0, 1]
        rows[3][1] = .nan
        let x = try FeatureMatrix(names: ["tenureDays", "sessions"], rows: rows)
        let labels = [true, false, true, false, true]
        #expect(
            message { _ = try LogisticModel.fit(x, labels: labels) }
                == "non-finite value (nan) of feature \"sessions\" in row 3")
        rows[3][1] = 2
        rows[4][0] = -.infinity
        let y = try FeatureMatrix(names: ["tenureDays", "sessions"], rows: rows)
        #expect(
            message { _ = try LogisticModel.fit(y, labels: labels) }
                == "non-finite value (-inf) of feature \"tenureDays\" in row 4")
        #expect(
            throws: PropensityError.nonFiniteFeature(name: "tenureDays", row: 4, value: -.infinity),
            performing: { try LogisticModel.fit(y, labels: labels) })
    }

    @Test("missing classes, counts that differ and bad arguments are rejected with a message")
    func inputErrors() throws {
        let x = try FeatureMatrix(names: ["a"], rows: [[1], [2], [3]])
        #expect(
            message { _ = try LogisticModel.fit(x, labels: [false, false, false]) }
                == "only 0 positive examples (goal event within the window) in the training period; at least 1 is needed")
        #expect(
            message { _ = try LogisticModel.fit(x, labels: [true, true, true]) }
                == "only 0 negative examples (no goal event within the window) in the training period; "
                + "at least 1 is needed")
        #expect(
            message { _ = try LogisticModel.fit(x, labels: [true, false]) }
                == "the feature matrix has 3 rows but 2 labels were given; there must be one label per row")
        #expect(
            message { _ = try LogisticModel.fit(FeatureMatrix(names: ["a"], values: []), labels: []) }
                == "the feature matrix has no rows: there is nothing to fit")
        #expect(
            message { _ = try LogisticModel.fit(x, labels: [true, false, true], l2: -1) }
                == "invalid l2 (-1.0): the L2 penalty must be finite and ≥ 0")
        #expect(
            message { _ = try FeatureMatrix(names: ["a", "b"], rows: [[1, 2], [3]]) }
                == "row 1 has 1 values but there are 2 features")
        #expect(
            message { _ = try FeatureMatrix(names: ["a", "b"], values: [1, 2, 3]) }
                == "the flat array has 3 values, which is not a whole number of rows of 2 features")
    }

    @Test("the logistic function neither overflows nor loses its tails")
    func sigmoid() {
        #expect(LogisticModel.sigmoid(0) == 0.5)
        #expect(LogisticModel.sigmoid(1_000) == 1)
        #expect(LogisticModel.sigmoid(-1_000) == 0)
        #expect(close(LogisticModel.sigmoid(-700), exp(-700), relative: 1e-12))
        #expect(LogisticModel.sigmoid(.nan).isNaN)
    }
}

@Suite("Classifier metrics")
struct ClassifierMetricsTests {
    // scikit-learn 1.9.1 on the reference data (Scripts/sklearn_reference.py): scores (sessions + 1) / 41, 39
    // distinct values over 2,000 rows, so almost every score is tied:
    // roc_auc_score(y, tied) and log_loss(y, tied).
    @Test("AUC and log loss with ties match scikit-learn")
    func tiesMatchScikitLearn() {
        let data = ReferenceData.make()
        let scores = ReferenceData.tiedScores(data.values)
        let auc = ClassifierMetrics.auc(scores: scores, labels: data.labels)
        #expect(close(auc ?? .nan, 0.4629021327031434, relative: 1e-12))
        let loss = ClassifierMetrics.logLoss(probabilities: scores, labels: data.labels)
        #expect(close(loss, 0.8284155742195053, relative: 1e-12))
    }

    @Test("AUC by hand")
    func auc() {
        // Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered.
        #expect(ClassifierMetrics.auc(scores: [0.1, 0.4, 0.35, 0.8], labels: [false, false, true, true]) == 0.75)
        // A tie between a positive and a negative counts one half: pairs (0.5 vs 0.5) ½, (0.5 vs 0.2) 1, (0.9 vs
        // both) 2 → 3.5 / 4.
        #expect(
            ClassifierMetrics.auc(scores: [0.5, 0.9, 0.5, 0.2], labels: [true, true, false, false]) == 0.875)
        #expect(ClassifierMetrics.auc(scores: [0.3, 0.3, 0.3, 0.3, 0.3], labels: [true, false, false, true, false]) == 0.5)
        #expect(ClassifierMetrics.auc(scores: [0.1, 0.2], labels: [true, true]) == nil)
        #expect(ClassifierMetrics.auc(scores: [0.1, 0.2], labels: [false, false]) == nil)
        #expect(ClassifierMetrics.auc(scores: [], labels: []) == nil)
        #expect(ClassifierMetrics.auc(scores: [0.1, .nan], labels: [true, false]) == nil)
    }

    @Test("log loss by hand, with clipping")
    func logLoss() {
        let loss = ClassifierMetrics.logLoss(probabilities: [0.8, 0.25], labels: [true, false])
        #expect(close(loss, -(log(0.8) + log(0.75)) / 2, relative: 1e-15))
        // A certain mistake costs −log(10⁻¹⁵) ≈ 34.54, not infinity (1 − 10⁻¹⁵ rounds, so the other side is close).
        let clipped = ClassifierMetrics.logLoss(probabilities: [0], labels: [true])
        #expect(close(clipped, -log(1e-15), relative: 1e-15))
        let clippedHigh = ClassifierMetrics.logLoss(probabilities: [1], labels: [false])
        #expect(close(clippedHigh, -log(1e-15), relative: 1e-4))
        #expect(ClassifierMetrics.logLoss(probabilities: [], labels: []).isNaN)
    }

    @Test("lift by hand, ties broken by index")
    func lift() {
        let scores = [0.9, 0.8, 0.8, 0.1, 0.5, 0.3, 0.2, 0.7, 0.6, 0.4]
        let labels = [true, false, true, false, false, true, false, false, false, false]
        // Top 20 % = 2 rows: index 0 (positive) and index 1 (negative; it wins the tie at 0.8 against index 2).
        // Positive rate 1/2 against 3/10 overall.
        #expect(close(ClassifierMetrics.lift(scores: scores, labels: labels, topFraction: 0.2) ?? .nan, 5.0 / 3, relative: 1e-15))
        // Default top 10 % = row 0 alone: 1 / 0.3.
        #expect(close(ClassifierMetrics.lift(scores: scores, labels: labels) ?? .nan, 10.0 / 3, relative: 1e-15))
        #expect(ClassifierMetrics.lift(scores: scores, labels: labels, topFraction: 1) == 1)
        #expect(ClassifierMetrics.lift(scores: scores, labels: [Bool](repeating: false, count: 10)) == nil)
        #expect(ClassifierMetrics.lift(scores: scores, labels: labels, topFraction: 0) == nil)
    }

    @Test("percentile ranks by hand, with ties")
    func percentiles() {
        // Sorted 1, 1, 3, 4, 5: a 1 has 0 below and 2 equal → (0 + 1) / 5; 3 → (2 + 0.5) / 5; 4 → 3.5 / 5; 5 → 4.5 / 5.
        #expect(ClassifierMetrics.percentiles([3, 1, 4, 1, 5]) == [50, 20, 70, 20, 90])
        #expect(ClassifierMetrics.percentiles([2, 2, 2]) == [50, 50, 50])
        #expect(ClassifierMetrics.percentiles([]) == [])
        let withNaN = ClassifierMetrics.percentiles([0.2, .nan, 0.1])
        #expect(withNaN[0] == 75 && withNaN[1].isNaN && withNaN[2] == 25)
    }
}

@Suite("Quality bar")
struct QualityBarTests {
    let bar = QualityBar()

    @Test("the defaults are the product's")
    func defaults() {
        #expect(bar.minimumAUC == 0.6 && bar.minimumPositives == 50 && bar.minimumNegatives == 50)
    }

    @Test("a model that meets the bar passes")
    func passes() throws {
        try bar.check(auc: 0.6, positives: 50, negatives: 50)
        try bar.check(auc: 0.91, positives: 809, negatives: 1_191)
    }

    @Test("each failure says what is wrong")
    func failures() {
        #expect(
            message { try bar.check(auc: 0.8, positives: 12, negatives: 500) }
                == "only 12 positive examples (goal event within the window) in the training period; "
                + "at least 50 are needed")
        #expect(
            message { try bar.check(auc: 0.8, positives: 500, negatives: 3) }
                == "only 3 negative examples (no goal event within the window) in the training period; "
                + "at least 50 are needed")
        #expect(
            message { try bar.check(auc: 0.55, positives: 500, negatives: 500) }
                == "the model's AUC on the held-out period is 0.55, below the quality bar of 0.60: not published")
        #expect(
            message { try bar.check(auc: 0.597, positives: 500, negatives: 500) }
                == "the model's AUC on the held-out period is 0.5970, below the quality bar of 0.6000: not published")
        #expect(
            message { try bar.check(auc: nil, positives: 500, negatives: 500) }
                == "the model's AUC on the held-out period could not be computed (it needs at least one positive and "
                + "one negative example and finite scores): not published")
        #expect(throws: PropensityError.aucBelowQualityBar(auc: 0.55, minimum: 0.6)) {
            try bar.check(auc: 0.55, positives: 500, negatives: 500)
        }
    }
}
