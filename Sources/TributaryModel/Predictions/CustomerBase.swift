import Foundation

/// One customer's purchase history in the form the customer-base models read (recency–frequency–monetary summary).
///
/// Times are in one unit chosen by the caller (days, weeks, …), the same for every customer of a fit; every prediction
/// made with a model fitted on such summaries is in that unit too (a horizon `t` of 39 means 39 weeks for weekly data).
/// Purchases are counted per period of the transaction log (per day in
/// ``CustomerSummary/summaries(transactions:calibrationEndDay:daysPerUnit:)``): several purchases on the first day make
/// no repeat purchase.
public struct CustomerSummary: Sendable, Equatable {
    /// `x`: the number of repeat purchases (purchase days after the first one); a whole number ≥ 0.
    public var frequency: Double
    /// `t_x`: the time from the first purchase to the last one; 0 when `frequency` is 0.
    public var recency: Double
    /// `T`: the time from the first purchase to the end of the calibration window; at least `recency`.
    public var age: Double
    /// The mean value of the repeat purchases (the first purchase excluded); 0 when there is none.
    public var monetaryValue: Double

    /// A summary from its four figures; see the properties for their meaning and units.
    public init(frequency: Double, recency: Double, age: Double, monetaryValue: Double = 0) {
        self.frequency = frequency
        self.recency = recency
        self.age = age
        self.monetaryValue = monetaryValue
    }
}

extension CustomerSummary {
    /// Summaries from a transaction log, with the semantics of `lifetimes.utils.summary_data_from_transaction_data`
    /// at a daily frequency.
    ///
    /// Transactions after `calibrationEndDay` are ignored; a customer with none on or before it gets no summary.
    /// Transactions on the same day are one purchase whose value is their sum. For each customer:
    /// - `frequency` = number of distinct purchase days − 1;
    /// - `recency` = (last purchase day − first purchase day) / `daysPerUnit`;
    /// - `age` = (`calibrationEndDay` − first purchase day) / `daysPerUnit`;
    /// - `monetaryValue` = mean of the daily sums over the purchase days after the first; 0 when `frequency` is 0.
    ///
    /// - Parameters:
    ///   - transactions: one element per transaction: the customer, the day as a day number (for example
    ///     ``CustomerSummary/dayNumber(year:month:day:)``, days since 1970-01-01) and the transaction's value.
    ///   - calibrationEndDay: the last day of the calibration window, inclusive, on the same day numbering.
    ///   - daysPerUnit: the length of the models' time unit in days: 1 for days, 7 for weeks.
    /// - Returns: one summary per customer with at least one transaction in the window.
    public static func summaries<Customer: Hashable>(
        transactions: [(customer: Customer, day: Int, value: Double)], calibrationEndDay: Int, daysPerUnit: Double = 1
    ) -> [Customer: CustomerSummary] {
        // Sum per customer and day first, then summarize each customer's days in order.
        var daily: [Customer: [Int: Double]] = [:]
        for transaction in transactions where transaction.day <= calibrationEndDay {
            daily[transaction.customer, default: [:]][transaction.day, default: 0] += transaction.value
        }
        var result: [Customer: CustomerSummary] = [:]
        result.reserveCapacity(daily.count)
        for (customer, days) in daily {
            let ordered = days.keys.sorted()
            guard let first = ordered.first, let last = ordered.last else { continue }
            let repeats = ordered.count - 1
            var monetary = 0.0
            if repeats > 0 {
                var total = 0.0
                for day in ordered.dropFirst() { total += days[day] ?? 0 }
                monetary = total / Double(repeats)
            }
            result[customer] = CustomerSummary(
                frequency: Double(repeats), recency: Double(last - first) / daysPerUnit,
                age: Double(calibrationEndDay - first) / daysPerUnit, monetaryValue: monetary)
        }
        return result
    }

    /// The number of days from 1970-01-01 to the given date of the proleptic Gregorian calendar (negative before
    /// 1970); a day numbering for ``CustomerSummary/summaries(transactions:calibrationEndDay:daysPerUnit:)`` that
    /// needs no calendar or time zone.
    public static func dayNumber(year: Int, month: Int, day: Int) -> Int {
        // Howard Hinnant's days_from_civil.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// Why a customer-base model could not be fitted.
public enum CustomerBaseError: ReportedError, Equatable {
    /// Fewer customers than the model needs: `found` usable customers, at least `minimum` needed.
    case tooFewCustomers(model: String, found: Int, minimum: Int, requirement: String)
    /// No customer made a repeat purchase, so the purchase process cannot be estimated.
    case noRepeatPurchases(model: String, customers: Int)
    /// A field of the input row `row` (its index in the array passed to `fit`) is NaN or infinite.
    case nonFiniteInput(field: String, row: Int, value: Double)
    /// A field of the input row `row` has a value outside its domain; `reason` says which. A row of −1 marks an
    /// argument of the fit rather than a customer row (the penalizer).
    case invalidInput(field: String, row: Int, value: Double, reason: String)
    /// The optimizer stopped without meeting its convergence test.
    case didNotConverge(model: String, iterations: Int, logLikelihood: Double)

    /// A sentence saying what is wrong and, where it can, what to do.
    public var description: String {
        switch self {
        case .tooFewCustomers(let model, let found, let minimum, let requirement):
            return "\(model) needs at least \(minimum) \(requirement), found \(found)"
        case .noRepeatPurchases(let model, let customers):
            return "\(model) cannot be fitted: none of the \(customers) customers has a repeat purchase (every frequency is 0); "
                + "collect a longer window of purchases"
        case .nonFiniteInput(let field, let row, let value):
            return "non-finite \(field) (\(value)) in customer row \(row)"
        case .invalidInput(let field, let row, let value, let reason) where row < 0:
            return "invalid \(field) (\(value)): \(reason)"
        case .invalidInput(let field, let row, let value, let reason):
            return "invalid \(field) (\(value)) in customer row \(row): \(reason)"
        case .didNotConverge(let model, let iterations, let logLikelihood):
            return "\(model) fit did not converge after \(iterations) iterations (last log-likelihood \(logLikelihood))"
        }
    }
}

/// The predicted value of a customer's purchases over the next `horizon`, as `lifetimes`'
/// `GammaGammaFitter.customer_lifetime_value`: the horizon is cut into `periods` equal steps; each step's expected
/// purchases (the difference of the BG/NBD's cumulative conditional expectations at its ends) are valued at the
/// Gamma-Gamma expected average spend and discounted to the present from the step's end.
///
/// - Parameters:
///   - bgnbd: the purchase model.
///   - gammaGamma: the spend model.
///   - customer: the customer's summary, in the models' time unit.
///   - horizon: how far ahead, in the models' time unit (the unit of the summaries they were fitted on).
///   - discountRatePerPeriod: the discount rate per time unit of the models (per week for weekly summaries): a value
///     received at time `s` is worth `1 / (1 + rate)^s` now. To reproduce `lifetimes` with weekly data and a monthly
///     rate `m`, pass `pow(1 + m, 1 / 4.345) - 1`, `horizon: months * 4.345` and `periods: months`.
///   - periods: the number of steps (at least 1); nil for one step per time unit (`ceil(horizon)` steps of equal
///     length). Each step costs one evaluation of ``BGNBDModel/expectedPurchases(_:within:)``.
/// - Returns: the discounted expected value, in the currency of `monetaryValue`; 0 for a horizon ≤ 0; NaN when the
///   horizon or the rate is not finite, or a model input is NaN.
public func predictedLifetimeValue(
    bgnbd: BGNBDModel, gammaGamma: GammaGammaModel, customer: CustomerSummary, horizon: Double,
    discountRatePerPeriod: Double = 0, periods: Int? = nil
) -> Double {
    guard horizon.isFinite, discountRatePerPeriod.isFinite else { return .nan }
    guard horizon > 0 else { return 0 }
    let steps = max(1, periods ?? Int(min((horizon - 1e-9).rounded(.up), 1_000_000)))
    let step = horizon / Double(steps)
    let spend = gammaGamma.expectedAverageSpend(customer)
    let logDiscount = log1p(discountRatePerPeriod)
    var previous = 0.0
    var value = 0.0
    for k in 1...steps {
        let end = Double(k) * step
        let cumulative = bgnbd.expectedPurchases(customer, within: end)
        value += spend * (cumulative - previous) * exp(-logDiscount * end)
        previous = cumulative
    }
    return value
}
