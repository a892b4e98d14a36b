import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryPredictions

extension TributaryCommand {
    struct Predictions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Predictive traits: fit the customer-base models on purchases, score every buyer, show the fit.",
            subcommands: [Fit.self, Score.self, Show.self])
    }
}

/// `--as-of` as a date: `2026-12-01` (midnight UTC) or a full ISO-8601 time.
private func parseAsOf(_ text: String?) throws -> Date {
    guard let text else { return Date() }
    do { return try PostgresTime.parse(text) } catch {
        throw CLIError("--as-of '\(text)': not a date or time (use 2026-12-01 or 2026-12-01T12:00:00Z)")
    }
}

extension TributaryCommand.Predictions {
    struct Fit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fit BG/NBD (repeat purchases) and Gamma-Gamma (spend) on every profile's purchases; score every buyer.",
            discussion: """
                The purchase event and revenue property default to the RFM settings of the computed traits file. The fit \
                is stored in cdp.prediction_fits and the scores replace cdp.profile_predictions in the same transaction.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "The purchase event (default: the RFM settings' event, else 'Order Completed').") var event: String?
        @Option(help: "The purchase event's revenue property (default: the RFM settings', else 'revenue').")
        var revenueProperty: String?
        @Option(help: "The models' time unit in days (7: weeks).") var timeUnitDays: Double = 7
        @Option(help: "expected_purchases counts purchases in the next this many days.") var purchasesDays = 90
        @Option(help: "predicted_lifetime_value is the spend expected in the next this many days.") var lifetimeDays = 365
        @Option(help: "Annual discount rate of future spend in predicted_lifetime_value (0.1 = 10%).")
        var annualDiscountRate: Double = 0
        @Option(help: "Fit on purchases before this date or time (default: now).") var asOf: String?

        func run() async throws {
            let asOf = try parseAsOf(asOf)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let predictions = CustomerBasePredictions(client: client, logger: logger)
                var settings = try await predictions.defaultSettings()
                if let event { settings.purchaseEvent = event }
                if let revenueProperty { settings.revenueProperty = revenueProperty }
                settings.timeUnitDays = timeUnitDays
                settings.purchasesDays = purchasesDays
                settings.lifetimeDays = lifetimeDays
                settings.annualDiscountRate = annualDiscountRate
                let (fit, scored): (CustomerBaseFit, Int)
                do { (fit, scored) = try await predictions.fit(settings, asOf: asOf) } catch let error as PredictionError {
                    throw CLIError(error.description)
                }
                print(describe(fit))
                print("scored \(scored) buyers into cdp.profile_predictions")
                try await recordAudit(
                    client, "predictions.fit", target: "fit \(fit.id)",
                    details: ["customers": .number(String(fit.customers)), "event": .string(settings.purchaseEvent)])
            }
        }
    }

    struct Score: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Score every buyer again with the latest fit (or --fit ID) on purchases up to now.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The fit to score with (default: the latest).") var fit: Int64?
        @Option(help: "Score on purchases before this date or time (default: now).") var asOf: String?

        func run() async throws {
            let asOf = try parseAsOf(asOf)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let started = ContinuousClock.now
                do {
                    let (used, scored) = try await CustomerBasePredictions(client: client, logger: logger).score(
                        asOf: asOf, fitID: fit)
                    print("scored \(scored) buyers with fit \(used.id) in \(ContinuousClock.now - started)")
                } catch let error as PredictionError {
                    throw CLIError(error.description)
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the latest fit (or --fit ID): parameters and data.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The fit to show (default: the latest).") var fit: Int64?

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                guard let stored = try await CustomerBasePredictions(client: client, logger: logger).storedFit(id: fit) else {
                    throw CLIError(
                        fit.map { "no fit \($0) in cdp.prediction_fits" } ?? "no fit yet: run `tributary predictions fit`")
                }
                print(describe(stored))
            }
        }
    }
}

/// A fit as the commands print it.
private func describe(_ fit: CustomerBaseFit) -> String {
    func number(_ value: Double) -> String { String(format: "%.4g", value) }
    let s = fit.settings
    var lines = [
        "fit \(fit.id): '\(s.purchaseEvent)' (value: properties.\(s.revenueProperty)), purchases before "
            + "\(PostgresTime.format(fit.windowEnd)); time unit \(number(s.timeUnitDays)) days",
        "  buyers \(fit.customers), repeat buyers \(fit.repeatCustomers); fitted in \(fit.duration)",
        "  purchases (BG/NBD): r \(number(fit.purchases.r)), alpha \(number(fit.purchases.alpha)), "
            + "a \(number(fit.purchases.a)), b \(number(fit.purchases.b)); log-likelihood \(String(format: "%.2f", fit.purchases.logLikelihood))",
    ]
    if let spend = fit.spend {
        lines.append(
            "  spend (Gamma-Gamma): p \(number(spend.p)), q \(number(spend.q)), v \(number(spend.v)); "
                + "log-likelihood \(String(format: "%.2f", spend.logLikelihood))")
    } else {
        lines.append("  spend: not fitted (fewer than 10 repeat buyers with a positive value); no spend or lifetime value")
    }
    lines.append(
        "  scores: expected_purchases over \(s.purchasesDays) days, predicted_lifetime_value over \(s.lifetimeDays) days"
            + (s.annualDiscountRate > 0 ? " discounted at \(number(s.annualDiscountRate * 100))% a year" : ""))
    return lines.joined(separator: "\n")
}
