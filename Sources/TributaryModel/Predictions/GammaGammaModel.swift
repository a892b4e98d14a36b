import Foundation

/// The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves for
/// Customer Base Analysis"; Fader & Hardie, "The Gamma-Gamma Model of Monetary Value", 2013): a customer's transaction
/// values are Gamma(p, ν) with ν ~ Gamma(q, γ) across customers, independent of the purchase process.
///
/// The money unit is that of the summaries' `monetaryValue`; `v` (γ in the papers) is in that unit.
public struct GammaGammaModel: Sendable, Equatable, Codable {
    /// Shape of the Gamma distribution of a customer's transaction values.
    public var p: Double
    /// Shape of the Gamma distribution of the customers' rate parameters ν.
    public var q: Double
    /// Scale (γ in the papers) of the Gamma distribution of the customers' rate parameters ν, in money units.
    public var v: Double
    /// The log-likelihood of the fitted customers' mean spends at these parameters, summed over customers (without
    /// any penalty).
    public var logLikelihood: Double
    /// The number of customers the model was fitted on (those with repeat purchases and a positive mean spend).
    public var customers: Int

    /// A model from known parameters (for example a stored fit).
    public init(p: Double, q: Double, v: Double, logLikelihood: Double = .nan, customers: Int = 0) {
        self.p = p
        self.q = q
        self.v = v
        self.logLikelihood = logLikelihood
        self.customers = customers
    }

    /// The fewest customers with repeat purchases and a positive mean spend a fit accepts.
    public static let minimumCustomers = 10

    /// Fits the model by maximum likelihood on the customers with `frequency` > 0 and `monetaryValue` > 0 (the others
    /// are skipped): the density of each one's mean spend m_x given x (eq. 1a of the Fader–Hardie note), summed.
    ///
    /// Optimizes log-parameters with BFGS on the analytic gradient, with a Nelder–Mead restart if BFGS stalls.
    /// - Parameters:
    ///   - customers: the summaries; `frequency` and `monetaryValue` must be finite in every row.
    ///   - penalizer: an L2 penalty as `lifetimes`' `penalizer_coef`: the optimizer minimizes the mean negative
    ///     log-likelihood plus `penalizer` · (p² + q² + v²). 0 for plain maximum likelihood.
    /// - Throws: ``CustomerBaseError`` for fewer than ``minimumCustomers`` usable customers, a non-finite input (naming
    ///   the field and row), or an optimizer that did not converge.
    public static func fit(_ customers: [CustomerSummary], penalizer: Double = 0) throws -> GammaGammaModel {
        let name = "Gamma-Gamma"
        guard penalizer.isFinite, penalizer >= 0 else {
            throw CustomerBaseError.invalidInput(
                field: "penalizer", row: -1, value: penalizer, reason: "the penalizer must be finite and ≥ 0")
        }
        var data = FitData()
        for (row, c) in customers.enumerated() {
            for (field, value) in [("frequency", c.frequency), ("monetaryValue", c.monetaryValue)] where !value.isFinite {
                throw CustomerBaseError.nonFiniteInput(field: field, row: row, value: value)
            }
            if c.frequency > 0 && c.monetaryValue > 0 { data.append(x: c.frequency, m: c.monetaryValue) }
        }
        guard data.count >= minimumCustomers else {
            throw CustomerBaseError.tooFewCustomers(
                model: name, found: data.count, minimum: minimumCustomers,
                requirement: "customers with a repeat purchase and a positive monetary value")
        }
        let n = Double(data.count)
        let objective: CustomerBaseOptimizer.Objective = { theta in
            let (ll, gradient) = data.logLikelihood(theta)
            var value = -ll / n
            var g = gradient.map { -$0 / n }
            if penalizer > 0 {
                for i in 0..<3 {
                    let parameter = exp(theta[i])
                    value += penalizer * parameter * parameter
                    g[i] += 2 * penalizer * parameter * parameter
                }
            }
            return (value, g)
        }
        let meanSpend = data.m.reduce(0, +) / n
        let starts: [[Double]] = [
            [0, log(2.0), log(meanSpend)], [Double](repeating: log(0.1), count: 3), [log(5), log(5), log(4 * meanSpend)],
        ]
        let result = CustomerBaseOptimizer.minimize(objective, starts: starts)
        let parameters = result.point.map { exp($0) }
        guard result.converged, parameters.count == 3, parameters.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            let ll = result.point.count == 3 ? data.logLikelihood(result.point).value : .nan
            throw CustomerBaseError.didNotConverge(model: name, iterations: result.iterations, logLikelihood: ll)
        }
        return GammaGammaModel(
            p: parameters[0], q: parameters[1], v: parameters[2], logLikelihood: data.logLikelihood(result.point).value,
            customers: data.count)
    }

    /// The log-likelihood of `customers` (those with `frequency` > 0 and `monetaryValue` > 0) under this model, summed.
    public func logLikelihood(of customers: [CustomerSummary]) -> Double {
        var data = FitData()
        for c in customers where c.frequency > 0 && c.monetaryValue > 0 { data.append(x: c.frequency, m: c.monetaryValue) }
        return data.logLikelihood([log(p), log(q), log(v)]).value
    }

    /// The expected mean value of the customer's future transactions, E[M | x, m_x]:
    /// (q − 1)/(p x + q − 1) · p v/(q − 1) + p x/(p x + q − 1) · m_x, a weighting of the population mean p v/(q − 1)
    /// and the customer's own mean; the population mean for a customer without repeat purchases.
    /// - Returns: the expectation in money units; NaN where it does not exist (q ≤ 1 for a customer without repeat
    ///   purchases).
    public func expectedAverageSpend(_ customer: CustomerSummary) -> Double {
        let x = max(0, customer.frequency)
        let m = x > 0 ? customer.monetaryValue : 0
        let denominator = p * x + q - 1
        guard denominator > 0 else { return .nan }
        return p * (v + x * m) / denominator
    }

    /// The fit's data: x and m_x of each usable customer, and the distinct x values (the Gamma-function terms depend on
    /// x alone).
    struct FitData {
        var x: [Double] = []
        var m: [Double] = []
        var frequencyIndex: [Int] = []
        var frequencies: [Double] = []
        var frequencyWeights: [Double] = []
        var positions: [Double: Int] = [:]
        /// The number of usable customers.
        var count: Int { x.count }

        mutating func append(x value: Double, m spend: Double) {
            let position: Int
            if let known = positions[value] {
                position = known
            } else {
                position = frequencies.count
                positions[value] = position
                frequencies.append(value)
                frequencyWeights.append(0)
            }
            frequencyWeights[position] += 1
            frequencyIndex.append(position)
            x.append(value)
            m.append(spend)
        }

        /// The summed log-likelihood at log-parameters θ = (ln p, ln q, ln v) and its gradient in θ:
        /// Σ lnΓ(px+q) − lnΓ(px) − lnΓ(q) + q ln v + (px − 1) ln m + px ln x − (px + q) ln(x m + v).
        func logLikelihood(_ theta: [Double]) -> (value: Double, gradient: [Double]) {
            let p = exp(theta[0])
            let q = exp(theta[1])
            let v = exp(theta[2])
            let n = Double(x.count)
            let logV = log(v)
            var value = n * (q * logV - lgamma(q))
            var dp = 0.0
            var dq = n * (logV - CustomerBaseMath.digamma(q))
            var dv = n * q / v
            for (j, xj) in frequencies.enumerated() {
                let w = frequencyWeights[j]
                let px = p * xj
                let psiPXQ = CustomerBaseMath.digamma(px + q)
                value += w * (lgamma(px + q) - lgamma(px) + px * log(xj))
                dp += w * xj * (psiPXQ - CustomerBaseMath.digamma(px) + log(xj))
                dq += w * psiPXQ
            }
            for i in x.indices {
                let xi = x[i]
                let logM = log(m[i])
                let total = xi * m[i] + v
                let logTotal = log(total)
                value += (p * xi - 1) * logM - (p * xi + q) * logTotal
                dp += xi * (logM - logTotal)
                dq -= logTotal
                dv -= (p * xi + q) / total
            }
            return (value, [dp * p, dq * q, dv * v])
        }
    }
}
