// swift-tools-version: 6.1
import PackageDescription

/// One set of Swift settings for every target, so the whole package is held to the same rules.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// The domain modules in the order of the flow: what the server, the destinations, the command line, the benchmarks
/// and the integration tests build on.
let domainModules: [Target.Dependency] = [
    "TributaryModel", "TributaryRuntime", "TributaryCollection", "TributaryIdentity", "TributaryProfiles",
    "TributaryPredictions", "TributarySegments", "TributarySyncs", "TributaryGovernance", "TributaryService",
]

/// The libraries, in the order of the flow (split from the package literal so the manifest type-checks quickly).
let libraryTargets: [Target] = [
    // libpq, found through pkg-config; `apt-get install libpq-dev` provides it on Debian.
    .systemLibrary(
        name: "CLibPQ",
        pkgConfig: "libpq",
        providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
    ),
    // zlib, for gzip request bodies; `apt-get install zlib1g-dev` provides it on Debian.
    .systemLibrary(
        name: "CZlib",
        pkgConfig: "zlib",
        providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]
    ),
    // The Postgres layer: connections, queries, COPY, LISTEN/NOTIFY, pool, embedded server. No domain code.
    .target(
        name: "Postgres",
        dependencies: [
            "CLibPQ",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Pure: definitions (catalog, traits, segments, syncs, identity rules) and their decoding, the segment DSL
    // and its SQL compilers, the identity engine, diff rules. No database or network calls: tested without one.
    .target(
        name: "TributaryModel",
        dependencies: [
            "Postgres",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: swiftSettings
    ),
    // A local HTTP server standing in for destinations and webhook consumers: the demo's webhook receiver, the
    // destination tests' recorder, the benchmarks' probes. Never used by the product's own paths.
    .target(
        name: "LocalReceiver",
        dependencies: [
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Made-up data for the demo, tests and benchmarks: synthetic people, sample events. Never used by the product's
    // own paths.
    .target(
        name: "TributaryFixtures",
        dependencies: ["TributaryModel"],
        swiftSettings: swiftSettings
    ),
    // What every stage shares: the stage loop (LISTEN, catch up, poll), stage metrics, session settings per
    // connection role.
    .target(
        name: "TributaryRuntime",
        dependencies: [
            "Postgres",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
        ],
        swiftSettings: swiftSettings
    ),
    // Collection: sources and write keys, validation and exactly-once storage of Segment calls (EventWriter), webhook
    // mappings, bulk import. Channel tributary_events.
    .target(
        name: "TributaryCollection",
        dependencies: [
            "Postgres",
            "TributaryModel",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Identity: the real-time identity stage, the graph store, rebuild, splits, admin (explain). Follows collection;
    // channel tributary_identity.
    .target(
        name: "TributaryIdentity",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryRuntime",
            "TributaryCollection",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Profiles: the profile stage (traits, computed traits, aggregates, consent), profile documents, views, API tokens.
    // Follows identity; what follows it in its transaction plugs in as a ProfileFollower.
    .target(
        name: "TributaryProfiles",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryRuntime",
            "TributaryCollection",
            "TributaryIdentity",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Predictions: the customer-base models (BG/NBD, Gamma-Gamma) fitted on profiles' purchases, their scores as
    // predictive traits (cdp.profile_predictions). Follows profiles; the models themselves are pure (TributaryModel).
    .target(
        name: "TributaryPredictions",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryProfiles",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Segments: applying definitions (views), membership, real-time segments (a ProfileFollower). Channel
    // tributary_segments.
    .target(
        name: "TributarySegments",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryCollection",
            "TributaryIdentity",
            "TributaryProfiles",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Syncs: the runner (diff vs delivered state), its store, real-time activation, the file and table destinations.
    .target(
        name: "TributarySyncs",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryRuntime",
            "TributaryCollection",
            "TributaryIdentity",
            "TributaryProfiles",
            "TributarySegments",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Governance: audit log, privacy (deletion, suppression, export, consent API), retention, roles. It reaches into
    // every stage before it in the flow (a deletion covers events, graph, profiles, memberships, destinations);
    // none of them depends on it.
    .target(
        name: "TributaryGovernance",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryCollection",
            "TributaryIdentity",
            "TributaryProfiles",
            "TributarySegments",
            "TributarySyncs",
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // The service: migrations, the database a command works on, and the pipeline assembly (Pipeline) that serve,
    // worker, demo, benchmarks and tests share.
    .target(
        name: "TributaryService",
        dependencies: [
            "Postgres",
            "TributaryModel",
            "TributaryCollection",
            "TributaryIdentity",
            "TributaryProfiles",
            "TributaryPredictions",
            "TributarySegments",
            "TributarySyncs",
            "TributaryGovernance",
            "TributaryRuntime",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ],
        swiftSettings: swiftSettings
    ),
    // The web console: server-rendered pages (escaped HTML, inline SVG charts), no JavaScript.
    .target(
        name: "TributaryConsole",
        dependencies: domainModules + [
            "Postgres",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // HTTP: the Segment-compatible collection API, health and metrics. Built in memory by tests.
    .target(
        name: "TributaryServer",
        dependencies: domainModules + [
            "Postgres",
            "CZlib",
            "TributaryConsole",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ],
        swiftSettings: swiftSettings
    ),
    // Destinations that speak HTTP (webhook, marketing APIs), kept out of the core, which has no HTTP.
    .target(
        name: "TributaryDestinations",
        dependencies: domainModules + [
            "Postgres",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    // Test support: real PostgreSQL (the configured server or an embedded one), a fresh database per test.
    .target(
        name: "PostgresTesting",
        dependencies: ["Postgres", .product(name: "Logging", package: "swift-log")],
        swiftSettings: swiftSettings
    ),
]

/// The command line and the benchmarks.
let executableTargets: [Target] = [
    .executableTarget(
        name: "tributary",
        dependencies: domainModules + [
            "TributaryFixtures",
            "LocalReceiver",
            "Postgres",
            "TributaryServer",
            "TributaryDestinations",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ],
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-bench",
        dependencies: [
            "Postgres",
            "TributaryFixtures",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/tributary-bench",
        swiftSettings: swiftSettings
    ),
    .target(
        name: "BenchmarkSupport",
        dependencies: domainModules + [
            "LocalReceiver",
            "Postgres",
            "TributaryDestinations",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/Support",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-ingest-bench",
        dependencies: domainModules + [
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/ingest",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-profiles-bench",
        dependencies: domainModules + [
            "TributaryFixtures",
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/profiles",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-predictions-bench",
        dependencies: domainModules + [
            "TributaryFixtures",
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/predictions",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-segments-bench",
        dependencies: domainModules + [
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/segments",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-syncs-bench",
        dependencies: domainModules + [
            "BenchmarkSupport",
            "Postgres",
            "TributaryDestinations",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/syncs",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-destinations-bench",
        dependencies: domainModules + [
            "BenchmarkSupport",
            "Postgres",
            "TributaryDestinations",
            "LocalReceiver",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/destinations",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-identity-bench",
        dependencies: domainModules + [
            "TributaryFixtures",
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/identity",
        swiftSettings: swiftSettings
    ),
    // Server time of each console page on the profiles benchmark's 300,000 profiles.
    .executableTarget(
        name: "tributary-console-bench",
        dependencies: domainModules + [
            "Postgres",
            "TributaryServer",
            "BenchmarkSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/console",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-profile-api-bench",
        dependencies: domainModules + [
            "Postgres",
            "TributaryServer",
            "BenchmarkSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/profile-api",
        swiftSettings: swiftSettings
    ),
    // The whole pipeline as shipped: `tributary serve` and `tributary worker` processes on a stock server.
    .executableTarget(
        name: "tributary-pipeline-bench",
        dependencies: domainModules + [
            "BenchmarkSupport",
            "Postgres",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/pipeline",
        swiftSettings: swiftSettings
    ),
    .executableTarget(
        name: "tributary-realtime-bench",
        dependencies: domainModules + [
            "TributaryFixtures",
            "BenchmarkSupport",
            "Postgres",
            "TributaryDestinations",
            "TributaryServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ],
        path: "Benchmarks/realtime",
        swiftSettings: swiftSettings
    ),
]

/// The test suites.
let testTargets: [Target] = [
    .testTarget(
        name: "PostgresTests",
        dependencies: ["Postgres", "PostgresTesting"],
        swiftSettings: swiftSettings
    ),
    // Unit tests of the pure modules: no database, no network.
    .testTarget(
        name: "TributaryModelTests",
        dependencies: ["TributaryModel", "TributaryFixtures", "Postgres"],
        swiftSettings: swiftSettings
    ),
    .testTarget(
        name: "TributaryStageTests",
        dependencies: domainModules + [
            "TributaryFixtures",
            "Postgres",
            "PostgresTesting",
        ],
        swiftSettings: swiftSettings
    ),
    .testTarget(
        name: "TributaryServerTests",
        dependencies: domainModules + [
            "TributaryServer",
            "Postgres",
            "PostgresTesting",
            "CZlib",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "Metrics", package: "swift-metrics"),
            // Drives chromedriver (WebDriver) in the console's browser test.
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ],
        // Run by SDKCompatibilityTests with the Python SDKs, not compiled.
        exclude: ["sdk_send.py"],
        swiftSettings: swiftSettings
    ),
    // Syncs and destinations against real PostgreSQL and local HTTP receivers.
    .testTarget(
        name: "TributaryDestinationsTests",
        dependencies: domainModules + [
            "LocalReceiver",
            "TributaryDestinations",
            "TributaryServer",
            "Postgres",
            "PostgresTesting",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Crypto", package: "swift-crypto"),
        ],
        swiftSettings: swiftSettings
    ),
    // End-to-end tests of the `tributary` executable: exit codes, one-line errors, real databases.
    .testTarget(
        name: "TributaryCLITests",
        dependencies: [
            "tributary", "Postgres", "PostgresTesting",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ],
        swiftSettings: swiftSettings
    ),
]

let package = Package(
    name: "tributary",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tributary", targets: ["tributary"]),
        .library(name: "Postgres", targets: ["Postgres"]),
        .library(name: "TributaryModel", targets: ["TributaryModel"]),
        .library(name: "TributaryRuntime", targets: ["TributaryRuntime"]),
        .library(name: "TributaryCollection", targets: ["TributaryCollection"]),
        .library(name: "TributaryIdentity", targets: ["TributaryIdentity"]),
        .library(name: "TributaryProfiles", targets: ["TributaryProfiles"]),
        .library(name: "TributaryPredictions", targets: ["TributaryPredictions"]),
        .library(name: "TributarySegments", targets: ["TributarySegments"]),
        .library(name: "TributarySyncs", targets: ["TributarySyncs"]),
        .library(name: "TributaryGovernance", targets: ["TributaryGovernance"]),
        .library(name: "TributaryService", targets: ["TributaryService"]),
        .library(name: "TributaryServer", targets: ["TributaryServer"]),
        .library(name: "TributaryDestinations", targets: ["TributaryDestinations"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: libraryTargets + executableTargets + testTargets
)
