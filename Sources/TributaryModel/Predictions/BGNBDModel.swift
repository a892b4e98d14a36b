import Foundation

/// The BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way: An
/// Alternative to the Pareto/NBD Model"): while alive, a customer buys as a Poisson process with rate λ ~ Gamma(r, α);
/// after each purchase they drop out with probability p ~ Beta(a, b).
///
/// Times (α, the summaries' recency and age, every horizon) are in the unit of the summaries the model was fitted on.
public struct BGNBDModel: Sendable, Equatable, Codable {
    /// Shape of the Gamma distribution of purchase rates.
    public var r: Double
    /// Scale of the Gamma distribution of purchase rates, in the time unit of the summaries (rates are per unit).
    public var alpha: Double
    /// First shape of the Beta distribution of dropout probabilities.
    public var a: Double
    /// Second shape of the Beta distribution of dropout probabilities.
    public var b: Double
    /// The log-likelihood of the fitted data at these parameters, summed over customers (without any penalty).
    public var logLikelihood: Double
    /// The number of customers the model was fitted on.
    public var customers: Int

    /// A model from known parameters (for example a stored fit).
    public init(r: Double, alpha: Double, a: Double, b: Double, logLikelihood: Double = .nan, customers: Int = 0) {
        self.r = r
        self.alpha = alpha
        self.a = a
        self.b = b
        self.logLikelihood = logLikelihood
        self.customers = customers
    }

    /// The fewest customers a fit accepts.
    public static let minimumCustomers = 10

    /// Fits the model by maximum likelihood (the log-likelihood of eq. 6 of the paper, summed over customers).
    ///
    /// Optimizes log-parameters (so all four stay positive) with BFGS on the analytic gradient, on times scaled to a
    /// maximum age of 1 as `lifetimes` does, with a Nelder–Mead restart if BFGS stalls. Identical (x, t_x, T) rows
    /// are evaluated once. `monetaryValue` is not read.
    ///
    /// - Parameters:
    ///   - customers: the summaries; each needs a finite whole `frequency` ≥ 0 and finite 0 ≤ `recency` ≤ `age`.
    ///   - penalizer: an L2 penalty on the parameters, as `lifetimes`' `penalizer_coef`: the optimizer minimizes the
    ///     mean negative log-likelihood plus `penalizer` · (r² + α² + a² + b²), α on times scaled to a maximum age of
    ///     1. 0 for plain maximum likelihood; small values (0.001–0.1) keep fits on small or degenerate data finite.
    /// - Throws: ``CustomerBaseError`` for fewer than ``minimumCustomers`` customers, no repeat purchase at all, a
    ///   non-finite or out-of-domain input (naming the field and row), or an optimizer that did not converge.
    public static func fit(_ customers: [CustomerSummary], penalizer: Double = 0) throws -> BGNBDModel {
        let name = "BG/NBD"
        guard customers.count >= minimumCustomers else {
            throw CustomerBaseError.tooFewCustomers(
                model: name, found: customers.count, minimum: minimumCustomers, requirement: "customers")
        }
        guard penalizer.isFinite, penalizer >= 0 else {
            throw CustomerBaseError.invalidInput(
                field: "penalizer", row: -1, value: penalizer, reason: "the penalizer must be finite and ≥ 0")
        }
        try validate(customers)
        guard customers.contains(where: { $0.frequency > 0 }) else {
            throw CustomerBaseError.noRepeatPurchases(model: name, customers: customers.count)
        }
        let data = FitData(customers)
        let maxAge = customers.reduce(0.0) { max($0, $1.age) }
        let scale = maxAge > 0 ? 1 / maxAge : 1
        let scaled = data.scaled(by: scale)
        let objective: CustomerBaseOptimizer.Objective = { theta in
            let (ll, gradient) = scaled.logLikelihood(theta)
            let n = scaled.totalWeight
            var value = -ll / n
            var g = gradient.map { -$0 / n }
            if penalizer > 0 {
                for i in 0..<4 {
                    let p = exp(theta[i])
                    value += penalizer * p * p
                    g[i] += 2 * penalizer * p * p
                }
            }
            return (value, g)
        }
        let starts = [[0.0, 0, 0, 0], [Double](repeating: log(0.1), count: 4), [log(0.5), log(2), log(0.5), log(2)]]
        let result = CustomerBaseOptimizer.minimize(objective, starts: starts)
        let parameters = result.point.map { exp($0) }
        guard result.converged, parameters.count == 4, parameters.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            let ll = result.point.count == 4 ? data.logLikelihood(unscaling: result.point, scale: scale) : .nan
            throw CustomerBaseError.didNotConverge(model: name, iterations: result.iterations, logLikelihood: ll)
        }
        return BGNBDModel(
            r: parameters[0], alpha: parameters[1] / scale, a: parameters[2], b: parameters[3],
            logLikelihood: data.logLikelihood(unscaling: result.point, scale: scale), customers: customers.count)
    }

    /// The log-likelihood of `customers` under this model, summed over customers (eq. 6 of the paper).
    public func logLikelihood(of customers: [CustomerSummary]) -> Double {
        FitData(customers).logLikelihood([log(r), log(alpha), log(a), log(b)]).value
    }

    /// The probability that the customer is still alive (has not dropped out) at the end of their calibration window:
    /// 1 for a customer without repeat purchases, else 1 / (1 + a / (b + x − 1) · ((α + T) / (α + t_x))^(r + x)),
    /// computed in log space.
    public func probabilityAlive(_ customer: CustomerSummary) -> Double {
        let x = customer.frequency
        guard x > 0 else { return x.isNaN ? .nan : 1 }
        let logOdds =
            log(a) - log(b + x - 1) + (r + x) * (log(alpha + customer.age) - log(alpha + customer.recency))
        return logOdds > 0 ? exp(-logOdds) / (1 + exp(-logOdds)) : 1 / (1 + exp(logOdds))
    }

    /// The expected number of repeat purchases in the next `t` time units of a customer with this summary,
    /// E[Y(t) | x, t_x, T] (eq. 10 of the paper).
    ///
    /// Eq. 10 reads (a + b + x − 1)/(a − 1) · [1 − ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x−1; z)] / D with
    /// z = t/(α+T+t) and D = 1 + [x > 0] a/(b+x−1) ((α+T)/(α+t_x))^(r+x). It is evaluated after Euler's
    /// transformation, ₂F₁(A, B; C; z) = (1 − z)^(C−A−B) ₂F₁(C−A, C−B; C; z), where C − B = a − 1: that takes the
    /// (a − 1) out of the denominator (no cancellation near a = 1), and the remaining series has terms that shrink
    /// like k^−(r+x+2−a) z^k instead of growing with x; it is summed with a floating scale, so no term can overflow.
    /// - Returns: the expectation (≥ 0); 0 for t ≤ 0; NaN for NaN inputs or a series that did not converge (only for
    ///   t larger than about 10⁵ times α + T).
    public func expectedPurchases(_ customer: CustomerSummary, within t: Double) -> Double {
        expectedPurchases(customer, within: t, directAbove: Self.directSeriesThreshold)
    }

    /// ``expectedPurchases(_:within:)`` summing ₂F₁ directly when a·z exceeds `directAbove` (both forms are exact;
    /// tests compare them).
    func expectedPurchases(_ customer: CustomerSummary, within t: Double, directAbove: Double) -> Double {
        let x = customer.frequency
        let age = customer.age
        guard !t.isNaN, !x.isNaN, !age.isNaN, !customer.recency.isNaN else { return .nan }
        guard t > 0 else { return 0 }
        guard t.isFinite else { return .nan }
        let bigA = r + x
        let bigC = a + b + x - 1
        let logOneMinusZ = log(alpha + age) - log(alpha + age + t)  // ln(1 − z) ≤ 0
        let z = t / (alpha + age + t)
        // (1 − P) / (a − 1) with P = (1−z)^A ₂F₁(A, B; C; z) = (1−z)^(a−1) [1 + (a − 1) S]:
        // = −expm1((a−1) ln(1−z)) / (a−1) − (1−z)^(a−1) S, and the factor C turns C·S into
        // Σ_{k≥1} (C−A)_k (a)_{k−1} z^k / ((C+1)_{k−1} k!), whose first term is (C − A) z.
        let aMinus1 = a - 1
        var logDenominator = 0.0
        if x > 0 {
            let logOdds = log(a) - log(b + x - 1) + (r + x) * (log(alpha + age) - log(alpha + customer.recency))
            logDenominator = CustomerBaseMath.logAddExp(0, logOdds)
        }
        // The rearranged series below has terms growing until k ≈ a·z: for a large a (a fit running to the edge
        // where dropout is nearly certain) the direct form, whose terms shrink at once, is the fast one; with a that
        // large, 1 − (1−z)^A ₂F₁ has no cancellation to avoid.
        if a * z > directAbove {
            return Self.directExpectedPurchases(
                bigA: bigA, bigB: b + x, bigC: bigC, aMinus1: aMinus1, z: z, logOneMinusZ: logOneMinusZ,
                logDenominator: logDenominator)
        }
        let g = aMinus1 == 0 ? -logOneMinusZ : -expm1(aMinus1 * logOneMinusZ) / aMinus1
        let first = (bigC - bigA) * z
        var weightedTail = 0.0
        if first != 0 {
            let series = CustomerBaseMath.logSeries(bigC - bigA + 1, a, bigC + 1, 2, z: z)
            guard series.converged else { return .nan }
            let logMagnitude = log(abs(first)) + series.logMagnitude + aMinus1 * logOneMinusZ
            weightedTail = (first < 0 ? -series.sign : series.sign) * exp(logMagnitude)
        }
        let numerator = bigC * g - weightedTail
        return max(0, numerator * exp(-logDenominator))
    }

    /// Above this a·z, ``expectedPurchases(_:within:)`` sums ₂F₁ directly.
    static let directSeriesThreshold = 100.0

    /// E[Y(t) | x, t_x, T] from eq. 10 as printed: C/(a−1) · (1 − (1−z)^A ₂F₁(A, B; C; z)) / denominator, with A = r + x,
    /// B = b + x, C = a + b + x − 1 (needs a > 1).
    static func directExpectedPurchases(
        bigA: Double, bigB: Double, bigC: Double, aMinus1: Double, z: Double, logOneMinusZ: Double, logDenominator: Double
    ) -> Double {
        let series = CustomerBaseMath.logSeries(bigA, bigB, bigC, 1, z: z)
        guard series.converged, series.sign > 0, aMinus1 != 0 else { return .nan }
        let logP = bigA * logOneMinusZ + series.logMagnitude
        return max(0, bigC / aMinus1 * -expm1(logP) * exp(-logDenominator))
    }

    /// The expected number of purchases of a customer just acquired (first purchase at time 0, none since) in the
    /// `t` time units after that first purchase, E[X(t)] (eq. 7 of the paper); for comparing a cohort's totals.
    public func expectedPurchasesNewCustomer(within t: Double) -> Double {
        expectedPurchases(CustomerSummary(frequency: 0, recency: 0, age: 0), within: t)
    }

    /// Checks every row's fields: finite, a whole frequency ≥ 0, 0 ≤ recency ≤ age.
    static func validate(_ customers: [CustomerSummary]) throws {
        for (row, c) in customers.enumerated() {
            for (field, value) in [("frequency", c.frequency), ("recency", c.recency), ("age", c.age)] where !value.isFinite {
                throw CustomerBaseError.nonFiniteInput(field: field, row: row, value: value)
            }
            if c.frequency < 0 || c.frequency != c.frequency.rounded() {
                throw CustomerBaseError.invalidInput(
                    field: "frequency", row: row, value: c.frequency,
                    reason: "the number of repeat purchases must be a whole number ≥ 0")
            }
            if c.recency < 0 {
                throw CustomerBaseError.invalidInput(
                    field: "recency", row: row, value: c.recency, reason: "the time of the last purchase must be ≥ 0")
            }
            if c.age < c.recency - 1e-9 * max(1, c.recency) {
                throw CustomerBaseError.invalidInput(
                    field: "age", row: row, value: c.age,
                    reason: "the customer's age must be at least its recency (\(c.recency))")
            }
        }
    }

    /// The fit's data: distinct (x, t_x, T) rows with their counts, and the distinct frequencies (the Gamma-function
    /// terms depend on x alone, so they are computed once per distinct x).
    struct FitData {
        struct Key: Hashable {
            var x: Double
            var recency: Double
            var age: Double
        }

        /// Distinct frequencies and the total weight of the rows with each.
        var frequencies: [Double] = []
        var frequencyWeights: [Double] = []
        /// Per distinct row: the index of its frequency, x, t_x, T and its weight.
        var frequencyIndex: [Int] = []
        var x: [Double] = []
        var recency: [Double] = []
        var age: [Double] = []
        var weight: [Double] = []
        var totalWeight = 0.0

        init(_ customers: [CustomerSummary]) {
            var rows: [Key: Int] = [:]
            var frequencyPosition: [Double: Int] = [:]
            for c in customers {
                totalWeight += 1
                let key = Key(x: c.frequency, recency: c.frequency > 0 ? c.recency : 0, age: c.age)
                if let row = rows[key] {
                    weight[row] += 1
                    frequencyWeights[frequencyIndex[row]] += 1
                    continue
                }
                let position: Int
                if let known = frequencyPosition[key.x] {
                    position = known
                } else {
                    position = frequencies.count
                    frequencyPosition[key.x] = position
                    frequencies.append(key.x)
                    frequencyWeights.append(0)
                }
                frequencyWeights[position] += 1
                rows[key] = x.count
                frequencyIndex.append(position)
                x.append(key.x)
                recency.append(key.recency)
                age.append(key.age)
                weight.append(1)
            }
        }

        /// The same data with every time multiplied by `factor`.
        func scaled(by factor: Double) -> FitData {
            var copy = self
            copy.recency = recency.map { $0 * factor }
            copy.age = age.map { $0 * factor }
            return copy
        }

        /// The log-likelihood on the original times of parameters fitted on times scaled by `scale`.
        func logLikelihood(unscaling theta: [Double], scale: Double) -> Double {
            logLikelihood([theta[0], theta[1] - log(scale), theta[2], theta[3]]).value
        }

        /// The summed log-likelihood at log-parameters θ = (ln r, ln α, ln a, ln b) and its gradient in θ.
        func logLikelihood(_ theta: [Double]) -> (value: Double, gradient: [Double]) {
            let r = exp(theta[0])
            let alpha = exp(theta[1])
            let a = exp(theta[2])
            let b = exp(theta[3])
            let logAlpha = log(alpha)
            let logA = log(a)
            // Terms that depend on x alone.
            var value = totalWeight * (r * logAlpha + lgamma(a + b) - lgamma(b) - lgamma(r))
            let psiR = CustomerBaseMath.digamma(r)
            let psiAB = CustomerBaseMath.digamma(a + b)
            let psiB = CustomerBaseMath.digamma(b)
            var dr = totalWeight * (logAlpha - psiR)
            var dAlpha = totalWeight * r / alpha
            var da = totalWeight * psiAB
            var db = totalWeight * (psiAB - psiB)
            var logBX1 = [Double](repeating: 0, count: frequencies.count)
            for (j, xj) in frequencies.enumerated() {
                let w = frequencyWeights[j]
                value += w * (lgamma(r + xj) + lgamma(b + xj) - lgamma(a + b + xj))
                let psiABX = CustomerBaseMath.digamma(a + b + xj)
                dr += w * CustomerBaseMath.digamma(r + xj)
                da -= w * psiABX
                db += w * (CustomerBaseMath.digamma(b + xj) - psiABX)
                if xj > 0 { logBX1[j] = log(b + xj - 1) }
            }
            // Per distinct row: log(exp(A3) + [x > 0] exp(A4)).
            for i in x.indices {
                let xi = x[i]
                let w = weight[i]
                let logAT = log(alpha + age[i])
                let a3 = -(r + xi) * logAT
                guard xi > 0 else {
                    value += w * a3
                    dr -= w * logAT
                    dAlpha -= w * (r + xi) / (alpha + age[i])
                    continue
                }
                let logATx = log(alpha + recency[i])
                let a4 = logA - logBX1[frequencyIndex[i]] - (r + xi) * logATx
                let total = CustomerBaseMath.logAddExp(a3, a4)
                let share = exp(a4 - total)  // the weight of the "dropped out after the last purchase" branch
                value += w * total
                dr -= w * ((1 - share) * logAT + share * logATx)
                dAlpha -= w * (r + xi) * ((1 - share) / (alpha + age[i]) + share / (alpha + recency[i]))
                da += w * share / a
                db -= w * share / (b + xi - 1)
            }
            return (value, [dr * r, dAlpha * alpha, da * a, db * b])
        }
    }
}
