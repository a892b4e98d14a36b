import Foundation

/// Why a propensity model could not be built, fitted or published.
public enum PropensityError: ReportedError, Equatable {
    /// The feature matrix has no rows.
    case emptyInput
    /// The number of labels differs from the number of rows of the feature matrix.
    case labelCountMismatch(rows: Int, labels: Int)
    /// Feature `name` of row `row` (its index in the feature matrix) is NaN or infinite.
    case nonFiniteFeature(name: String, row: Int, value: Double)
    /// Row `row` has `found` values where the matrix has `expected` features (one per name). A row of −1 marks a flat
    /// array whose length is not a multiple of the number of features.
    case featureCountMismatch(row: Int, expected: Int, found: Int)
    /// The features of a matrix are not the ones (names, in order) the model was fitted on.
    case featureNamesMismatch(expected: [String], found: [String])
    /// Fewer positive examples (goal event within the window) than needed: `found`, at least `minimum` needed.
    case tooFewPositives(found: Int, minimum: Int)
    /// Fewer negative examples (no goal event within the window) than needed: `found`, at least `minimum` needed.
    case tooFewNegatives(found: Int, minimum: Int)
    /// An argument of the fit is outside its domain; `reason` says which.
    case invalidParameter(name: String, value: Double, reason: String)
    /// Newton–Raphson stopped after `iterations` iterations without meeting its convergence test; `objective` is the
    /// last penalized log-likelihood.
    case didNotConverge(iterations: Int, objective: Double)
    /// The held-out AUC is below the quality bar, so the scores are not published.
    case aucBelowQualityBar(auc: Double, minimum: Double)
    /// The held-out AUC could not be computed (no positive or no negative example in the held-out period, or a
    /// non-finite score), so the scores are not published.
    case aucUnavailable

    /// A sentence saying what is wrong and, where it can, what to do.
    public var description: String {
        switch self {
        case .emptyInput:
            return "the feature matrix has no rows: there is nothing to fit"
        case .labelCountMismatch(let rows, let labels):
            return "the feature matrix has \(rows) rows but \(labels) labels were given; there must be one label per row"
        case .nonFiniteFeature(let name, let row, let value):
            return "non-finite value (\(value)) of feature \"\(name)\" in row \(row)"
        case .featureCountMismatch(let row, let expected, let found) where row < 0:
            return "the flat array has \(found) values, which is not a whole number of rows of \(expected) features"
        case .featureCountMismatch(let row, let expected, let found):
            return "row \(row) has \(found) values but there are \(expected) features"
        case .featureNamesMismatch(let expected, let found):
            return "the model was fitted on the features \(expected) but the matrix has the features \(found)"
        case .tooFewPositives(let found, let minimum):
            return "only \(found) positive examples (goal event within the window) in the training period; "
                + "at least \(minimum) \(minimum == 1 ? "is" : "are") needed"
        case .tooFewNegatives(let found, let minimum):
            return "only \(found) negative examples (no goal event within the window) in the training period; "
                + "at least \(minimum) \(minimum == 1 ? "is" : "are") needed"
        case .invalidParameter(let name, let value, let reason):
            return "invalid \(name) (\(value)): \(reason)"
        case .didNotConverge(let iterations, let objective):
            return "the propensity model's fit did not converge after \(iterations) Newton iterations "
                + "(last penalized log-likelihood \(objective))"
        case .aucBelowQualityBar(let auc, let minimum):
            // Two decimals, or four when two would print the AUC equal to the bar (0.597 against 0.60).
            let digits = Self.decimals(auc, 2) == Self.decimals(minimum, 2) ? 4 : 2
            return "the model's AUC on the held-out period is \(Self.decimals(auc, digits)), below the quality bar of "
                + "\(Self.decimals(minimum, digits)): not published"
        case .aucUnavailable:
            return "the model's AUC on the held-out period could not be computed (it needs at least one positive and "
                + "one negative example and finite scores): not published"
        }
    }

    /// `value` with `digits` decimals ("0.55"); `String(format:)` without a locale does not localize the point.
    static func decimals(_ value: Double, _ digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }
}
