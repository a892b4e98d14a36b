import Foundation

/// Measures of how well scores separate positive from negative examples, for checking a propensity model on a
/// held-out period before its scores are published.
public enum ClassifierMetrics: Sendable {
    /// The area under the ROC curve: the probability that a random positive example scores higher than a random
    /// negative one, ties counting one half (the Mann–Whitney U statistic over n₊ n₋, from average ranks); equals
    /// scikit-learn's `roc_auc_score`. O(n log n).
    /// - Returns: the AUC in [0, 1]; nil when either class is empty, a score is NaN, or the counts differ.
    public static func auc(scores: [Double], labels: [Bool]) -> Double? {
        guard scores.count == labels.count, !scores.contains(where: \.isNaN) else { return nil }
        let positives = labels.count(where: { $0 })
        let negatives = labels.count - positives
        guard positives > 0, negatives > 0 else { return nil }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        // Sum of the positives' ranks (1-based), each tie group getting its average rank.
        var rankSum = 0.0
        var start = 0
        while start < order.count {
            var end = start + 1
            while end < order.count, scores[order[end]] == scores[order[start]] { end += 1 }
            let averageRank = Double(start + 1 + end) / 2
            var groupPositives = 0
            for k in start..<end where labels[order[k]] { groupPositives += 1 }
            rankSum += averageRank * Double(groupPositives)
            start = end
        }
        let p = Double(positives)
        let u = rankSum - p * (p + 1) / 2
        return u / (p * Double(negatives))
    }

    /// The mean negative log-likelihood of the labels under the probabilities (cross-entropy), each probability
    /// clipped to [10⁻¹⁵, 1 − 10⁻¹⁵] so a confident mistake costs about 34.5 rather than infinity.
    /// - Returns: the loss (≥ 0); NaN when the arrays are empty, their counts differ, or a probability is NaN.
    public static func logLoss(probabilities: [Double], labels: [Bool]) -> Double {
        guard probabilities.count == labels.count, !probabilities.isEmpty else { return .nan }
        let epsilon = 1e-15
        var total = 0.0
        for (probability, label) in zip(probabilities, labels) {
            let clipped = min(max(probability, epsilon), 1 - epsilon)
            total -= label ? log(clipped) : log1p(-clipped)
        }
        return total / Double(labels.count)
    }

    /// The lift of the top `topFraction` of the examples by score: their positive rate divided by the overall positive
    /// rate (1 for a random ordering, up to 1 / `topFraction`).
    ///
    /// The top is the round(`topFraction` · n) highest scores (at least one); among equal scores the one with the
    /// lower index ranks first, so the result does not depend on the sort. NaN scores rank last.
    /// - Returns: the lift; nil when there is no positive, no example, the counts differ, or `topFraction` is not in
    ///   (0, 1].
    public static func lift(scores: [Double], labels: [Bool], topFraction: Double = 0.1) -> Double? {
        guard scores.count == labels.count, !scores.isEmpty, topFraction > 0, topFraction <= 1 else { return nil }
        let positives = labels.count(where: { $0 })
        guard positives > 0 else { return nil }
        let n = scores.count
        let top = min(n, max(1, Int((topFraction * Double(n)).rounded())))
        let order = scores.indices.sorted { i, j in
            let a = scores[i]
            let b = scores[j]
            if a.isNaN || b.isNaN {
                return a.isNaN == b.isNaN ? i < j : b.isNaN
            }
            return a != b ? a > b : i < j
        }
        var topPositives = 0
        for k in 0..<top where labels[order[k]] { topPositives += 1 }
        return (Double(topPositives) / Double(top)) / (Double(positives) / Double(n))
    }

    /// Each score's percentile rank in 0...100, in input order: 100 × (the number of scores strictly below it plus
    /// half the number equal to it, itself included) / n, as `scipy.stats.percentileofscore(kind: "mean")`. A unique
    /// lowest score of n gets 50 / n, all-equal scores get 50. NaN scores get NaN and are left out of the ranking.
    /// O(n log n).
    public static func percentiles(_ scores: [Double]) -> [Double] {
        var result = [Double](repeating: .nan, count: scores.count)
        let order = scores.indices.filter { !scores[$0].isNaN }.sorted { scores[$0] < scores[$1] }
        let n = Double(order.count)
        var start = 0
        while start < order.count {
            var end = start + 1
            while end < order.count, scores[order[end]] == scores[order[start]] { end += 1 }
            let percentile = 100 * (Double(start) + Double(end - start) / 2) / n
            for k in start..<end { result[order[k]] = percentile }
            start = end
        }
        return result
    }
}

/// The conditions a propensity model must meet before its scores are published: enough examples of each class in
/// the training period and a good enough AUC on the held-out period.
public struct QualityBar: Sendable, Equatable {
    /// The lowest held-out AUC at which scores are published.
    public var minimumAUC: Double
    /// The fewest positive training examples (goal event within the window).
    public var minimumPositives: Int
    /// The fewest negative training examples (no goal event within the window).
    public var minimumNegatives: Int

    /// A bar with the given thresholds; the defaults are the product's.
    public init(minimumAUC: Double = 0.6, minimumPositives: Int = 50, minimumNegatives: Int = 50) {
        self.minimumAUC = minimumAUC
        self.minimumPositives = minimumPositives
        self.minimumNegatives = minimumNegatives
    }

    /// Checks the training counts alone (before any model is fitted).
    /// - Throws: ``PropensityError/tooFewPositives(found:minimum:)`` or ``PropensityError/tooFewNegatives(found:minimum:)``.
    public func checkCounts(positives: Int, negatives: Int) throws {
        guard positives >= minimumPositives else {
            throw PropensityError.tooFewPositives(found: positives, minimum: minimumPositives)
        }
        guard negatives >= minimumNegatives else {
            throw PropensityError.tooFewNegatives(found: negatives, minimum: minimumNegatives)
        }
    }

    /// Checks a model against the bar: first the training counts, then the held-out AUC.
    /// - Parameters:
    ///   - auc: the AUC on the held-out period (``ClassifierMetrics/auc(scores:labels:)``); nil when it could not be
    ///     computed.
    ///   - positives: the number of positive examples in the training period.
    ///   - negatives: the number of negative examples in the training period.
    /// - Throws: ``PropensityError/tooFewPositives(found:minimum:)``, ``PropensityError/tooFewNegatives(found:minimum:)``,
    ///   ``PropensityError/aucUnavailable`` (nil or NaN AUC) or ``PropensityError/aucBelowQualityBar(auc:minimum:)``.
    public func check(auc: Double?, positives: Int, negatives: Int) throws {
        try checkCounts(positives: positives, negatives: negatives)
        guard let auc, !auc.isNaN else { throw PropensityError.aucUnavailable }
        guard auc >= minimumAUC else { throw PropensityError.aucBelowQualityBar(auc: auc, minimum: minimumAUC) }
    }
}
