import Foundation

/// A table of numeric features, one row per example (customer) and one named column per feature, stored row-major.
///
/// Values are not checked here: ``LogisticModel/fit(_:labels:l2:maxIterations:)`` rejects non-finite values naming
/// the feature and row, and scoring turns them into NaN probabilities.
public struct FeatureMatrix: Sendable, Equatable {
    /// The feature names, one per column, in column order.
    public let names: [String]
    /// The number of rows (examples).
    public let rows: Int
    /// The values, row after row: the value of feature `j` in row `i` is `values[i * columns + j]`.
    public let values: [Double]

    /// The number of columns (features); the number of names.
    public var columns: Int { names.count }

    /// A matrix from one array per row, each with one value per name.
    /// - Throws: ``PropensityError/featureCountMismatch(row:expected:found:)`` naming the first row of another length.
    public init(names: [String], rows: [[Double]]) throws {
        let columns = names.count
        var values: [Double] = []
        values.reserveCapacity(rows.count * columns)
        for (index, row) in rows.enumerated() {
            guard row.count == columns else {
                throw PropensityError.featureCountMismatch(row: index, expected: columns, found: row.count)
            }
            values.append(contentsOf: row)
        }
        self.names = names
        self.rows = rows.count
        self.values = values
    }

    /// A matrix from its row-major values (`values[i * names.count + j]` is feature `j` of row `i`), without copying.
    ///
    /// With no names the matrix has no row unless `values` is empty; use ``init(names:rows:)`` for rows without
    /// features.
    /// - Throws: ``PropensityError/featureCountMismatch(row:expected:found:)`` (row −1) when the number of values is
    ///   not a multiple of the number of names.
    public init(names: [String], values: [Double]) throws {
        let columns = names.count
        guard columns > 0 ? values.count % columns == 0 : values.isEmpty else {
            throw PropensityError.featureCountMismatch(row: -1, expected: columns, found: values.count)
        }
        self.names = names
        self.rows = columns > 0 ? values.count / columns : 0
        self.values = values
    }

    /// The value of feature `column` in row `row`.
    public subscript(row: Int, column: Int) -> Double {
        values[row * columns + column]
    }

    /// The values of row `row`, in column order.
    public func row(_ row: Int) -> ArraySlice<Double> {
        values[(row * columns)..<((row + 1) * columns)]
    }
}
