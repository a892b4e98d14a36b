import ArgumentParser
import Foundation
import Logging
import Postgres
import TributaryModel
import TributaryPredictions
import TributaryProfiles
import TributarySegments
import TributaryService

extension TributaryCommand {
    struct Predictions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Predictive traits: customer-base models (purchases, spend, lifetime value), propensity scores, recommendations.",
            subcommands: [Fit.self, Propensity.self, Recommend.self, Score.self, Show.self])
    }
}

/// After new scores: refreshes the segments that read them and says so when any did.
func refreshSegmentsReadingScores(_ client: PostgresClient, logger: Logger) async throws {
    let report = try await PredictionHandOff.refreshSegments(client: client, logger: logger)
    if report.segments > 0 {
        print(
            "segments reading scores refreshed: \(report.segments) (\(report.entered) entered, \(report.exited) exited)")
    }
}

/// Progress of a long run on standard error, each line with the seconds since this was made: `[   2.4 s] fitting`.
func progressLines() -> @Sendable (String) -> Void {
    let started = ContinuousClock.now
    return { line in
        let seconds = Double((ContinuousClock.now - started).milliseconds) / 1000
        FileHandle.standardError.write(Data(String(format: "[%6.1f s] ", seconds).utf8 + Array(line.utf8) + [10]))
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
                do { (fit, scored) = try await predictions.fit(settings, asOf: asOf, progress: progressLines()) } catch let error
                    as PredictionError
                {
                    throw CLIError(error.description)
                }
                print(describe(fit))
                print("scored \(scored) buyers into cdp.profile_predictions")
                try await refreshSegmentsReadingScores(client, logger: logger)
                try await recordAudit(
                    client, "predictions.fit", target: "fit \(fit.id)",
                    details: ["customers": .number(String(fit.customers)), "event": .string(settings.purchaseEvent)])
            }
        }
    }

    struct Propensity: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Train, validate and publish a propensity score: the likelihood of a goal event (or churn) within a window.",
            discussion: """
                A logistic regression on point-in-time features (event counts, activity, recency, goal events and their \
                value) is trained as of 2 windows ago and tested on the last window; above the quality bar (AUC 0.6, \
                50 positive and 50 negative examples) the model trained on the last window is published and every \
                profile active in the past year scored into cdp.profile_propensities (probability and percentile).
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The score's name (lower case letters, digits, _), e.g. purchase_30d.") var name: String
        @Option(help: "The goal event (a track call's event name).") var goal: String?
        @Flag(help: "Predict churn: no event at all within the window.") var churn = false
        @Option(help: "The window in days (7 to 90).") var windowDays = 30
        @Option(help: "L2 penalty of the logistic regression.") var l2: Double = 1
        @Option(help: "Train as of this date or time (default: now).") var asOf: String?

        func validate() throws {
            if churn == (goal != nil) { throw ValidationError("give either --goal EVENT or --churn") }
        }

        func run() async throws {
            let asOf = try parseAsOf(asOf)
            let logger = global.makeLogger()
            let settings = PropensitySettings(
                name: name, kind: churn ? .churn : .goal, goalEvent: goal, windowDays: windowDays, l2: l2)
            try await global.withMigratedClient(logger: logger) { client in
                let (model, scored): (PropensityModel, Int)
                do {
                    (model, scored) = try await PropensityScores(client: client, logger: logger)
                        .train(settings, asOf: asOf, progress: progressLines())
                } catch let error as PredictionError {
                    throw CLIError(error.description)
                }
                print(describe(model))
                print("scored \(scored) profiles into cdp.profile_propensities")
                try await refreshSegmentsReadingScores(client, logger: logger)
                try await recordAudit(
                    client, "predictions.propensity", target: name,
                    details: ["model": .number(String(model.id)), "auc": .number(String(format: "%.4f", model.auc))])
            }
        }
    }

    struct Recommend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compute every profile's next-best products (item-to-item co-occurrence, popular as the fallback).",
            discussion: """
                Replaces cdp.profile_recommendations and cdp.popular_products in one transaction; the profile API serves \
                them (GET /v1/profiles/{kind}/{value}/recommendations).
                """)
        @OptionGroup var global: GlobalOptions
        @Option(
            name: .customLong("event"),
            help:
                "An interaction event and its weight, EVENT=WEIGHT (repeatable; default: Product Viewed=1, Product Added=3, Order Completed=5)."
        )
        var events: [String] = []
        @Option(help: "The event that makes a product bought (never recommended to that profile).")
        var purchaseEvent = "Order Completed"
        @Option(help: "The property naming the product (also read from each element of properties.products).")
        var productProperty = "product_id"
        @Option(help: "An interaction loses half its weight every this many days.") var halfLifeDays: Double = 30
        @Option(help: "Ignore interactions older than this many days.") var lookbackDays = 365
        @Option(help: "Recommendations per profile (1 to 100).") var top = 10
        @Option(help: "Compute from events before this date or time (default: now).") var asOf: String?

        func run() async throws {
            let asOf = try parseAsOf(asOf)
            var settings = RecommendationSettings(
                purchaseEvent: purchaseEvent, productProperty: productProperty, halfLifeDays: halfLifeDays,
                lookbackDays: lookbackDays, top: top)
            if !events.isEmpty {
                settings.events = [:]
                for entry in events {
                    guard let equals = entry.lastIndex(of: "="), let weight = Double(entry[entry.index(after: equals)...])
                    else { throw CLIError("--event '\(entry)': use EVENT=WEIGHT, for example 'Product Viewed=1'") }
                    settings.events[String(entry[..<equals])] = weight
                }
            }
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let started = ContinuousClock.now
                let report: Recommendations.Report
                do {
                    report = try await Recommendations(client: client, logger: logger)
                        .compute(settings, asOf: asOf, progress: progressLines())
                } catch let
                    error as PredictionError
                {
                    throw CLIError(error.description)
                }
                print(
                    "recommendations: \(report.rows) for \(report.profiles) profiles (\(report.products) products, "
                        + "\(report.pairs) similar pairs) in \(ContinuousClock.now - started)")
                try await refreshSegmentsReadingScores(client, logger: logger)
            }
        }
    }

    struct Score: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Score every buyer again with the latest fit (or --fit ID), or a propensity model, on events up to now.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The fit to score with (default: the latest).") var fit: Int64?
        @Option(help: "Score this propensity model instead (its latest published version).") var propensity: String?
        @Option(help: "Score on events before this date or time (default: now).") var asOf: String?

        func run() async throws {
            let asOf = try parseAsOf(asOf)
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let started = ContinuousClock.now
                if let propensity {
                    do {
                        let (model, scored) = try await PropensityScores(client: client, logger: logger).score(
                            propensity, asOf: asOf)
                        print("scored \(scored) profiles with propensity model \(model.id) in \(ContinuousClock.now - started)")
                        try await refreshSegmentsReadingScores(client, logger: logger)
                    } catch let error as PredictionError {
                        throw CLIError(error.description)
                    }
                    return
                }
                do {
                    let (used, scored) = try await CustomerBasePredictions(client: client, logger: logger).score(
                        asOf: asOf, fitID: fit)
                    print("scored \(scored) buyers with fit \(used.id) in \(ContinuousClock.now - started)")
                    try await refreshSegmentsReadingScores(client, logger: logger)
                } catch let error as PredictionError {
                    throw CLIError(error.description)
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the latest customer-base fit (or --fit ID) and every published propensity model.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The customer-base fit to show (default: the latest).") var fit: Int64?

        func run() async throws {
            let logger = global.makeLogger()
            try await global.withMigratedClient(logger: logger) { client in
                let stored = try await CustomerBasePredictions(client: client, logger: logger).storedFit(id: fit)
                if let fit, stored == nil { throw CLIError("no fit \(fit) in cdp.prediction_fits") }
                print(stored.map(describe) ?? "customer-base models: no fit yet (tributary predictions fit)")
                let models = try await PropensityScores(client: client, logger: logger).models()
                if models.isEmpty { print("propensity models: none yet (tributary predictions propensity NAME …)") }
                for model in models { print(describe(model)) }
                let traits = try await ProfileAdmin(client: client, logger: logger).current().predictions
                if !traits.isEmpty { print("predictive traits (tributary traits apply; columns of cdp.profiles):") }
                for trait in traits {
                    let published: String
                    switch trait.source {
                    case .customerBase: published = stored.map { "fit \($0.id)" } ?? "no fit yet"
                    case .propensity(let name):
                        published = models.first { $0.settings.name == name }.map { "model \($0.id)" } ?? "no model yet"
                    case .recommendations:
                        let at = try await Recommendations(client: client, logger: logger).computedAt()
                        published = at.map { "computed \(PostgresTime.format($0))" } ?? "not computed yet"
                    }
                    let window = trait.within.map { " within \($0.days) days" } ?? ""
                    print(
                        "  \(trait.name): \(trait.predict.rawValue)\(trait.event.map { " '\($0)'" } ?? "")\(window); \(published)"
                    )
                }
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
        lines.append(
            "  spend: not fitted (\(fit.spendProblem ?? "too few repeat buyers with a positive value")); "
                + "no spend or lifetime value")
    }
    lines.append(
        "  scores: expected_purchases over \(s.purchasesDays) days, predicted_lifetime_value over \(s.lifetimeDays) days"
            + (s.annualDiscountRate > 0 ? " discounted at \(number(s.annualDiscountRate * 100))% a year" : ""))
    return lines.joined(separator: "\n")
}

/// A propensity model as the commands print it.
private func describe(_ model: PropensityModel) -> String {
    let s = model.settings
    let what = s.kind == .churn ? "churn (no event)" : "'\(s.goalEvent ?? "")'"
    let lift = model.liftTopDecile.map { String(format: "%.2fx", $0) } ?? "n/a"
    return [
        "propensity '\(s.name)' (model \(model.id)): \(what) within \(s.windowDays) days",
        "  validation: trained as of \(PostgresTime.format(model.trainingCutoff)) on \(model.trainingExamples) profiles "
            + "(\(model.trainingPositives) positive), tested on the next window: \(model.validationExamples) profiles "
            + "(\(model.validationPositives) positive)",
        String(format: "  AUC %.3f, log loss %.4f, lift of the top decile ", model.auc, model.logLoss) + lift,
    ].joined(separator: "\n")
}
