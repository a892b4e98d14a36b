import Foundation

/// A logistic regression of a binary outcome (did the customer reach the goal event within the window?) on
/// standardized features: P(y = 1 | x) = σ(`intercept` + Σⱼ `coefficients[j]` · (xⱼ − `means[j]`) / `scales[j]`).
///
/// The standardization is learned on the training data (population standard deviation, as scikit-learn's
/// `StandardScaler`); a constant column gets scale 1, so its standardized value is 0 on the training data and its
/// coefficient is 0: it is ignored.
public struct LogisticModel: Sendable, Equatable, Codable {
    /// The feature names, in the column order the model reads.
    public var names: [String]
    /// The training mean of each feature.
    public var means: [Double]
    /// The training population standard deviation of each feature; 1 for a constant feature.
    public var scales: [Double]
    /// The intercept: the log-odds of a training example with every feature at its mean.
    public var intercept: Double
    /// The coefficient of each standardized feature (the change in log-odds per training standard deviation); 0 for a
    /// constant feature.
    public var coefficients: [Double]
    /// The L2 penalty the model was fitted with (see ``fit(_:labels:l2:maxIterations:)``).
    public var l2: Double
    /// The number of Newton steps the fit took.
    public var iterations: Int

    /// A model from known parameters (for example a stored fit); the four arrays must have one element per name.
    public init(
        names: [String], means: [Double], scales: [Double], intercept: Double, coefficients: [Double], l2: Double,
        iterations: Int
    ) {
        self.names = names
        self.means = means
        self.scales = scales
        self.intercept = intercept
        self.coefficients = coefficients
        self.l2 = l2
        self.iterations = iterations
    }

    /// The relative change of the objective below which the fit has converged.
    static let objectiveTolerance = 1e-10
    /// The largest gradient component below which the fit has converged.
    static let gradientTolerance = 1e-8

    /// Fits the model by penalized maximum likelihood.
    ///
    /// The features are standardized first (see the type's documentation); the fit then maximizes over the intercept
    /// β₀ and the coefficients β
    ///
    ///     Σᵢ [yᵢ ηᵢ − log(1 + exp ηᵢ)] − l2 / 2 · |β|²,   ηᵢ = β₀ + β · zᵢ,
    ///
    /// where zᵢ is row i standardized; the intercept is not penalized. This is the objective of scikit-learn's
    /// `LogisticRegression(C: 1 / l2)` (its default L2 penalty) fitted on `StandardScaler`-transformed features, so
    /// the two give the same coefficients.
    ///
    /// The optimizer is Newton–Raphson (IRLS): each step solves (ZᵀWZ + l2 · I′) δ = gradient by Cholesky, where I′
    /// is the identity without the intercept's entry, with a small ridge added if that matrix is not numerically
    /// positive definite; then halves the step until the penalized log-likelihood increases enough (Armijo). It
    /// starts from the intercept-only solution and stops when the relative change of the objective is below 10⁻¹⁰
    /// (absolute below magnitude 1): after a full step that changed it by less, or when the next full step is
    /// predicted to (half the Newton decrement gradient · δ, the change the local quadratic model predicts; that step
    /// is then taken without a line search, which could not resolve such a change in the sum), or when the largest
    /// gradient component is below 10⁻⁸.
    ///
    /// With `l2` > 0 the maximum exists and is unique even when the classes are perfectly separable; with `l2` = 0 and
    /// separable classes the coefficients grow without bound and the fit fails or returns very large coefficients.
    ///
    /// Cost: one pass of O(rows · features²) and two of O(rows · features) per Newton step, typically 5 to 10.
    ///
    /// - Parameters:
    ///   - x: the training features; every value must be finite.
    ///   - labels: one label per row of `x`: true when the goal event happened within the window.
    ///   - l2: the L2 penalty on the standardized coefficients, finite and ≥ 0; larger values shrink them to 0.
    ///   - maxIterations: the most Newton steps to take (at least 1).
    /// - Throws: ``PropensityError``: an empty matrix, a label count that differs from the row count, a non-finite
    ///   value (naming the feature and row), no positive or no negative label, an invalid `l2` or `maxIterations`, or
    ///   a fit that did not converge within `maxIterations` steps.
    public static func fit(
        _ x: FeatureMatrix, labels: [Bool], l2: Double = 1.0, maxIterations: Int = 50
    ) throws -> LogisticModel {
        guard x.rows > 0 else { throw PropensityError.emptyInput }
        guard labels.count == x.rows else {
            throw PropensityError.labelCountMismatch(rows: x.rows, labels: labels.count)
        }
        guard l2.isFinite, l2 >= 0 else {
            throw PropensityError.invalidParameter(name: "l2", value: l2, reason: "the L2 penalty must be finite and ≥ 0")
        }
        guard maxIterations >= 1 else {
            throw PropensityError.invalidParameter(
                name: "maxIterations", value: Double(maxIterations), reason: "at least one Newton step is needed")
        }
        let positives = labels.count(where: { $0 })
        guard positives >= 1 else { throw PropensityError.tooFewPositives(found: positives, minimum: 1) }
        guard x.rows - positives >= 1 else {
            throw PropensityError.tooFewNegatives(found: x.rows - positives, minimum: 1)
        }

        let standardization = try Standardization(x)
        let problem = NewtonProblem(x: x, labels: labels, standardization: standardization, l2: l2)
        let result = try problem.solve(maxIterations: maxIterations, positiveRate: Double(positives) / Double(x.rows))

        var coefficients = [Double](repeating: 0, count: x.columns)
        for (a, column) in standardization.active.enumerated() {
            coefficients[column] = result.theta[a + 1]
        }
        return LogisticModel(
            names: x.names, means: standardization.means, scales: standardization.scales, intercept: result.theta[0],
            coefficients: coefficients, l2: l2, iterations: result.iterations)
    }

    /// The log-odds of a row of raw (unstandardized) features in the model's column order; NaN when the row does not
    /// have one value per feature or has a non-finite value (the log-odds would not be finite).
    public func logOdds(_ row: some Collection<Double>) -> Double {
        guard row.count == coefficients.count else { return .nan }
        var eta = intercept
        for (j, value) in row.enumerated() {
            eta += coefficients[j] / scales[j] * (value - means[j])
        }
        return eta.isFinite ? eta : .nan
    }

    /// The probability that the goal event happens within the window for a row of raw features in the model's column
    /// order (σ of ``logOdds(_:)``, evaluated without overflow); NaN when the row does not have one value per feature
    /// or has a non-finite value.
    public func probability(_ row: some Collection<Double>) -> Double {
        Self.sigmoid(logOdds(row))
    }

    /// The probability of every row of `x`, in row order.
    ///
    /// `x` must have the model's features in the model's order (see ``checkFeatures(_:)``); otherwise every
    /// probability is NaN. A row with a non-finite value gets NaN, as in ``probability(_:)``.
    public func probabilities(_ x: FeatureMatrix) -> [Double] {
        guard x.names == names, coefficients.count == names.count else {
            return [Double](repeating: .nan, count: x.rows)
        }
        let p = x.columns
        // Fold the standardization into per-column factors once (as ``logOdds(_:)`` does, so both give identical
        // results); the row loop is then one subtraction and one multiply-add per value.
        var factors = [Double](repeating: 0, count: p)
        for j in 0..<p { factors[j] = coefficients[j] / scales[j] }
        var result = [Double](repeating: 0, count: x.rows)
        x.values.withUnsafeBufferPointer { values in
            means.withUnsafeBufferPointer { means in
                factors.withUnsafeBufferPointer { factors in
                    result.withUnsafeMutableBufferPointer { result in
                        for i in 0..<x.rows {
                            let base = i * p
                            var eta = intercept
                            for j in 0..<p {
                                eta += factors[j] * (values[base + j] - means[j])
                            }
                            result[i] = eta.isFinite ? Self.sigmoid(eta) : .nan
                        }
                    }
                }
            }
        }
        return result
    }

    /// Checks that `x` has the model's features, by name and in order.
    /// - Throws: ``PropensityError/featureNamesMismatch(expected:found:)`` otherwise.
    public func checkFeatures(_ x: FeatureMatrix) throws {
        guard x.names == names else {
            throw PropensityError.featureNamesMismatch(expected: names, found: x.names)
        }
    }

    /// The logistic function 1 / (1 + e^−η), evaluated so that neither branch overflows: in [0, 1], NaN for NaN.
    public static func sigmoid(_ eta: Double) -> Double {
        if eta >= 0 {
            return 1 / (1 + exp(-eta))
        }
        let e = exp(eta)
        return e / (1 + e)
    }
}

/// The training standardization: means and population standard deviations, and the non-constant columns.
struct Standardization {
    /// The mean of every column.
    var means: [Double]
    /// The population standard deviation of every column; 1 for a constant column.
    var scales: [Double]
    /// The indices of the non-constant columns, in order: the columns the fit estimates a coefficient for.
    var active: [Int]

    /// Computes the standardization of `x` in two row-major passes (sums with the range, then the centered sums),
    /// rejecting the first non-finite value in row order.
    init(_ x: FeatureMatrix) throws {
        let n = x.rows
        let p = x.columns
        var sums = [Double](repeating: 0, count: p)
        var minima = [Double](repeating: .infinity, count: p)
        var maxima = [Double](repeating: -.infinity, count: p)
        var firstNonFinite: Int?
        x.values.withUnsafeBufferPointer { values in
            for i in 0..<n {
                let base = i * p
                for j in 0..<p {
                    let value = values[base + j]
                    if !value.isFinite {
                        firstNonFinite = base + j
                        return
                    }
                    sums[j] += value
                    minima[j] = min(minima[j], value)
                    maxima[j] = max(maxima[j], value)
                }
            }
        }
        if let index = firstNonFinite {
            throw PropensityError.nonFiniteFeature(name: x.names[index % p], row: index / p, value: x.values[index])
        }
        var means = sums.map { $0 / Double(n) }
        // Second pass: the centered sums correct the mean's rounding error, the centered squares give the variance.
        var deviations = [Double](repeating: 0, count: p)
        var squares = [Double](repeating: 0, count: p)
        x.values.withUnsafeBufferPointer { values in
            for i in 0..<n {
                let base = i * p
                for j in 0..<p {
                    let d = values[base + j] - means[j]
                    deviations[j] += d
                    squares[j] += d * d
                }
            }
        }
        var scales = [Double](repeating: 1, count: p)
        var active: [Int] = []
        for j in 0..<p {
            if minima[j] == maxima[j] {
                means[j] = minima[j]
                continue
            }
            let correction = deviations[j] / Double(n)
            means[j] += correction
            // Σ(x − m′)² = Σ(x − m)² − n (m′ − m)² for the corrected mean m′.
            let variance = max(0, squares[j] / Double(n) - correction * correction)
            let scale = variance.squareRoot()
            guard scale > 0, scale.isFinite else { continue }
            scales[j] = scale
            active.append(j)
        }
        self.means = means
        self.scales = scales
        self.active = active
    }
}

/// The Newton–Raphson iteration of ``LogisticModel/fit(_:labels:l2:maxIterations:)`` on the active standardized
/// columns; parameter 0 is the intercept, parameter 1 + a the coefficient of active column a.
///
/// A class so that its working buffers (a few per row, a few per parameter) are allocated once per fit and freed in
/// `deinit`; the hot loops index them without bounds checks or copy-on-write checks. Used by one fit on one thread.
final class NewtonProblem {
    let x: FeatureMatrix
    let l2: Double
    /// The number of rows, of columns, of active columns and of parameters (1 + active columns).
    let n: Int
    let p: Int
    let q: Int
    let d: Int
    /// The rows of a block of the ZᵀWZ accumulation (see ``accumulate()``).
    static let block = 4

    /// The labels as 0 or 1.
    let y: UnsafeMutableBufferPointer<Double>
    /// The active columns' indices, means and scales.
    let active: UnsafeMutableBufferPointer<Int>
    let means: UnsafeMutableBufferPointer<Double>
    let scales: UnsafeMutableBufferPointer<Double>
    /// Per row: the log-odds at `theta`, and their change along the Newton direction.
    let eta: UnsafeMutableBufferPointer<Double>
    let step: UnsafeMutableBufferPointer<Double>
    /// The parameters, the gradient and the Newton direction (d each), and the negated Hessian (packed lower
    /// triangle: entry (j, k), k ≤ j, at j (j + 1) / 2 + k).
    let theta: UnsafeMutableBufferPointer<Double>
    let gradient: UnsafeMutableBufferPointer<Double>
    let delta: UnsafeMutableBufferPointer<Double>
    let hessian: UnsafeMutableBufferPointer<Double>
    /// The block's standardized rows (row r at r · d, the intercept's 1 first) and their IRLS weights.
    let blockRows: UnsafeMutableBufferPointer<Double>
    let blockWeights: UnsafeMutableBufferPointer<Double>

    init(x: FeatureMatrix, labels: [Bool], standardization: Standardization, l2: Double) {
        self.x = x
        self.l2 = l2
        n = x.rows
        p = x.columns
        q = standardization.active.count
        d = q + 1
        func buffer<T>(_ values: [T]) -> UnsafeMutableBufferPointer<T> {
            let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count)
            _ = buffer.initialize(from: values)
            return buffer
        }
        func zeros(_ count: Int) -> UnsafeMutableBufferPointer<Double> {
            let buffer = UnsafeMutableBufferPointer<Double>.allocate(capacity: count)
            buffer.initialize(repeating: 0)
            return buffer
        }
        y = buffer(labels.map { $0 ? 1 : 0 })
        active = buffer(standardization.active)
        means = buffer(standardization.active.map { standardization.means[$0] })
        scales = buffer(standardization.active.map { standardization.scales[$0] })
        eta = zeros(n)
        step = zeros(n)
        theta = zeros(d)
        gradient = zeros(d)
        delta = zeros(d)
        hessian = zeros(d * (d + 1) / 2)
        blockRows = zeros(Self.block * d)
        blockWeights = zeros(Self.block)
    }

    deinit {
        for buffer in [y, means, scales, eta, step, theta, gradient, delta, hessian, blockRows, blockWeights] {
            buffer.deallocate()
        }
        active.deallocate()
    }

    /// The log-likelihood term of one row, y η − log(1 + e^η) = −log(1 + e^(∓η)), without overflow.
    @inline(__always)
    static func logLikelihood(eta: Double, y: Double) -> Double {
        let signed = y > 0 ? -eta : eta
        return -(max(signed, 0) + log1p(exp(-abs(eta))))
    }

    /// Runs the iteration from the intercept-only start, logit(`positiveRate`).
    func solve(maxIterations: Int, positiveRate: Double) throws -> (theta: [Double], iterations: Int) {
        for k in 0..<d { theta[k] = 0 }
        theta[0] = log(positiveRate) - log1p(-positiveRate)
        var steps = 0
        while true {
            let objective = accumulate()
            guard objective.isFinite else {
                throw PropensityError.didNotConverge(iterations: steps, objective: objective)
            }
            if gradient.allSatisfy({ abs($0) < LogisticModel.gradientTolerance }) {
                return (Array(theta), steps)
            }
            guard steps < maxIterations else {
                throw PropensityError.didNotConverge(iterations: steps, objective: objective)
            }
            guard
                let solution = Self.solvePositiveDefinite(
                    packed: Array(hessian), dimension: d, rightHandSide: Array(gradient))
            else {
                throw PropensityError.didNotConverge(iterations: steps, objective: objective)
            }
            var slope = 0.0
            for k in 0..<d {
                delta[k] = solution[k]
                slope += gradient[k] * solution[k]
            }
            let tolerance = LogisticModel.objectiveTolerance * max(1, abs(objective))
            if slope >= 0, slope / 2 <= tolerance {
                // The quadratic model predicts the full step to change the objective by slope / 2 (the Newton
                // decrement), below the tolerance and usually below the rounding error of the objective's sum,
                // where a line search could no longer tell better from worse: take the step and stop.
                for k in 0..<d { theta[k] += delta[k] }
                return (Array(theta), steps + 1)
            }
            computeStep()
            guard let (size, newObjective) = lineSearch(objective: objective, slope: slope) else {
                // No step along the Newton direction improves the objective (the predicted gain is above the
                // tolerance, so this is not convergence): the problem is numerically too hard.
                throw PropensityError.didNotConverge(iterations: steps, objective: objective)
            }
            for k in 0..<d { theta[k] += size * delta[k] }
            steps += 1
            if size == 1, abs(newObjective - objective) <= tolerance {
                return (Array(theta), steps)
            }
        }
    }

    /// Writes row `i` standardized into `z` (d values, the intercept's 1 first) and returns its log-odds at `theta`.
    @inline(__always)
    func standardize(
        row i: Int, of values: UnsafeBufferPointer<Double>, into z: UnsafeMutablePointer<Double>
    )
        -> Double
    {
        let base = i * p
        let contiguous = q == p
        z[0] = 1
        var e = theta[0]
        for a in 0..<q {
            let column = contiguous ? a : active[a]
            let value = (values[base + column] - means[a]) / scales[a]
            z[a + 1] = value
            e += theta[a + 1] * value
        }
        return e
    }

    /// One pass over the rows at `theta`: stores every row's log-odds in `eta`, the gradient of the penalized
    /// log-likelihood in `gradient` and its negated Hessian ZᵀWZ + l2 · I′ in `hessian`; returns the penalized
    /// log-likelihood.
    ///
    /// ZᵀWZ is the bulk of the fit's time (d (d + 1) / 2 multiply-adds per row for d parameters). It is accumulated
    /// into the packed lower triangle only (symmetry halves the work), four rows at a time: each entry is loaded and
    /// stored once per four rows, and the inner loop runs over contiguous memory, which the compiler vectorizes. The
    /// triangle (d = 31: 4 KB) and the four standardized rows stay in L1 cache while the rows stream through.
    func accumulate() -> Double {
        gradient.update(repeating: 0)
        hessian.update(repeating: 0)
        guard let z = blockRows.baseAddress, let h = hessian.baseAddress else { return .nan }
        let block = Self.block
        let (n, d) = (self.n, self.d)
        var logLikelihood = 0.0
        x.values.withUnsafeBufferPointer { values in
            var start = 0
            while start < n {
                let count = min(block, n - start)
                for r in 0..<block {
                    guard r < count else {
                        blockWeights[r] = 0  // past the last row: a zero weight adds nothing
                        continue
                    }
                    let i = start + r
                    let zr = z + r * d
                    let e = standardize(row: i, of: values, into: zr)
                    eta[i] = e
                    // μ and 1 − μ from one exponential, both to full relative precision; the weight μ (1 − μ) too.
                    let t = exp(-abs(e))
                    let s = 1 / (1 + t)
                    let positive = y[i] > 0
                    let residual = positive ? (e >= 0 ? t * s : s) : -(e >= 0 ? s : t * s)
                    blockWeights[r] = t * s * s
                    logLikelihood -= (positive ? max(-e, 0) : max(e, 0)) + log1p(t)
                    for j in 0..<d { gradient[j] += residual * zr[j] }
                }
                let z0 = z
                let z1 = z + d
                let z2 = z + 2 * d
                let z3 = z + 3 * d
                let w0 = blockWeights[0]
                let w1 = blockWeights[1]
                let w2 = blockWeights[2]
                let w3 = blockWeights[3]
                var offset = 0
                for j in 0..<d {
                    let a0 = w0 * z0[j]
                    let a1 = w1 * z1[j]
                    let a2 = w2 * z2[j]
                    let a3 = w3 * z3[j]
                    let hj = h + offset
                    for k in 0...j {
                        hj[k] += (a0 * z0[k] + a1 * z1[k]) + (a2 * z2[k] + a3 * z3[k])
                    }
                    offset += j + 1
                }
                start += count
            }
        }
        var penalty = 0.0
        for k in 1..<d {
            penalty += theta[k] * theta[k]
            gradient[k] -= l2 * theta[k]
            hessian[k * (k + 1) / 2 + k] += l2
        }
        return logLikelihood - l2 / 2 * penalty
    }

    /// The change of every row's log-odds along `delta`: `step[i]` = δ · zᵢ.
    func computeStep() {
        let (n, p, q) = (self.n, self.p, self.q)
        let contiguous = q == p
        x.values.withUnsafeBufferPointer { values in
            for i in 0..<n {
                let base = i * p
                var s = delta[0]
                for a in 0..<q {
                    let column = contiguous ? a : active[a]
                    s += delta[a + 1] * ((values[base + column] - means[a]) / scales[a])
                }
                step[i] = s
            }
        }
    }

    /// Halves the step along `delta` from `theta` until the penalized log-likelihood rises by at least 10⁻⁴ of the
    /// linear prediction (Armijo); returns the step size and the new objective, or nil after 40 halvings.
    func lineSearch(objective: Double, slope: Double) -> (size: Double, objective: Double)? {
        guard slope > 0, slope.isFinite else { return nil }
        let n = self.n
        var size = 1.0
        for _ in 0..<40 {
            var value = 0.0
            for i in 0..<n {
                value += Self.logLikelihood(eta: eta[i] + size * step[i], y: y[i])
            }
            var penalty = 0.0
            for k in 1..<d {
                let b = theta[k] + size * delta[k]
                penalty += b * b
            }
            value -= l2 / 2 * penalty
            if value.isFinite, value >= objective + 1e-4 * size * slope {
                return (size, value)
            }
            size /= 2
        }
        return nil
    }

    /// Solves A δ = b for the symmetric matrix A given by its packed lower triangle, by Cholesky. If A is not
    /// numerically positive definite, retries with a ridge of 10⁻¹⁰, 10⁻⁸, … 10⁻² times its largest diagonal entry
    /// added to the diagonal; nil if even that fails.
    static func solvePositiveDefinite(packed: [Double], dimension d: Int, rightHandSide b: [Double]) -> [Double]? {
        var largest = 0.0
        for j in 0..<d { largest = max(largest, abs(packed[j * (j + 1) / 2 + j])) }
        guard largest.isFinite else { return nil }
        for ridge in [0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2] {
            if let solution = choleskySolve(packed: packed, dimension: d, ridge: ridge * max(largest, 1e-300), b: b) {
                return solution
            }
        }
        return nil
    }

    /// One Cholesky attempt on A + ridge · I: nil when a pivot is not positive or loses all but about 12 of its 16
    /// digits to cancellation (relative to the diagonal entry), which marks a matrix too close to singular.
    static func choleskySolve(packed: [Double], dimension d: Int, ridge: Double, b: [Double]) -> [Double]? {
        var l = [Double](repeating: 0, count: d * d)
        for j in 0..<d {
            for k in 0...j {
                l[j * d + k] = packed[j * (j + 1) / 2 + k]
            }
            l[j * d + j] += ridge
        }
        for j in 0..<d {
            let diagonal = l[j * d + j]
            var pivot = diagonal
            for k in 0..<j { pivot -= l[j * d + k] * l[j * d + k] }
            guard pivot > 1e-12 * diagonal, pivot.isFinite else { return nil }
            let root = pivot.squareRoot()
            l[j * d + j] = root
            for i in (j + 1)..<d {
                var sum = l[i * d + j]
                for k in 0..<j { sum -= l[i * d + k] * l[j * d + k] }
                l[i * d + j] = sum / root
            }
        }
        // L u = b, then Lᵀ δ = u.
        var u = b
        for i in 0..<d {
            var sum = u[i]
            for k in 0..<i { sum -= l[i * d + k] * u[k] }
            u[i] = sum / l[i * d + i]
        }
        for i in stride(from: d - 1, through: 0, by: -1) {
            var sum = u[i]
            for k in (i + 1)..<d { sum -= l[k * d + i] * u[k] }
            u[i] = sum / l[i * d + i]
        }
        return u.allSatisfy(\.isFinite) ? u : nil
    }
}
