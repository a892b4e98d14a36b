import Foundation
import TributaryModel

/// The CDNOW data sets of the customer-base literature (Fader, Hardie & Lee 2005), as shipped inside the `lifetimes`
/// 0.11.3 wheel on PyPI (`lifetimes/datasets/`). Never committed: downloaded on first use into
/// `.tributary/datasets/` with pip, or read from `$TRIBUTARY_DATASETS` (a directory holding the extracted wheel).
public enum CDNOWData {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The project's root (where `.tributary/` lives), from this file's place in it.
    public static let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The lines of one of the data set's files (`CDNOW_sample.txt`, `cdnow_customers_summary.csv`, …).
    public static func lines(_ name: String) throws -> [Substring] {
        let text = try String(contentsOf: try directory().appendingPathComponent(name), encoding: .utf8)
        return text.split(whereSeparator: \.isNewline)
    }

    /// Serializes the first download between the tests that need the data at the same time.
    private static let downloading = NSLock()

    /// The `lifetimes/datasets` directory, downloading and extracting the wheel if it is not there yet.
    ///
    /// The wheel is downloaded and extracted into a directory of its own, which is renamed into place only once
    /// complete: a reader never sees a half-extracted file (tests in one process wait for the first download; another
    /// process racing it keeps whichever rename came first).
    public static func directory(projectRoot: URL = projectRoot) throws -> URL {
        let fileManager = FileManager.default
        let base =
            ProcessInfo.processInfo.environment["TRIBUTARY_DATASETS"].map { URL(fileURLWithPath: $0) }
            ?? projectRoot.appendingPathComponent(".tributary/datasets/lifetimes-0.11.3")
        let datasets = base.appendingPathComponent("lifetimes/datasets")
        let complete = { fileManager.fileExists(atPath: datasets.appendingPathComponent("CDNOW_master.txt").path) }
        if complete() { return datasets }
        downloading.lock()
        defer { downloading.unlock() }
        if complete() { return datasets }
        try fileManager.createDirectory(at: base, withIntermediateDirectories: true)
        let staging = base.appendingPathComponent("download-\(UUID().uuidString)")
        try fileManager.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? fileManager.removeItem(at: staging) }
        // pip itself, or (Debian without python3-pip) pip in a virtual environment of its own.
        var python = "python3"
        if (try? run(["python3", "-m", "pip", "--version"])) == nil {
            let venv = base.appendingPathComponent("venv")
            if !fileManager.fileExists(atPath: venv.appendingPathComponent("bin/python3").path) {
                try run(["python3", "-m", "venv", venv.path])
            }
            python = venv.appendingPathComponent("bin/python3").path
        }
        try run([
            python, "-m", "pip", "download", "lifetimes==0.11.3", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
            "-d", staging.path,
        ])
        let wheel = try fileManager.contentsOfDirectory(atPath: staging.path).first {
            $0.lowercased().hasPrefix("lifetimes-0.11.3") && $0.hasSuffix(".whl")
        }
        guard let wheel else {
            throw Unavailable(description: "pip left no lifetimes-0.11.3 wheel in \(staging.path)")
        }
        let extracted = staging.appendingPathComponent("wheel")
        try run(["python3", "-m", "zipfile", "-e", staging.appendingPathComponent(wheel).path, extracted.path])
        guard fileManager.fileExists(atPath: extracted.appendingPathComponent("lifetimes/datasets/CDNOW_master.txt").path)
        else {
            throw Unavailable(description: "the lifetimes wheel \(wheel) has no lifetimes/datasets/CDNOW_master.txt")
        }
        // Into place in one rename; if another process got there first, its copy is as good.
        do {
            try fileManager.moveItem(
                at: extracted.appendingPathComponent("lifetimes"), to: base.appendingPathComponent("lifetimes"))
        } catch {
            if !complete() { throw error }
        }
        return datasets
    }

    private static func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do { try process.run() } catch {
            throw Unavailable(description: "cannot run \(arguments.joined(separator: " ")): \(error); install python3 and pip")
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Unavailable(
                description: "`\(arguments.joined(separator: " "))` failed (exit \(process.terminationStatus)): "
                    + "\(text.suffix(600)); the CDNOW data comes from PyPI's lifetimes 0.11.3 wheel, or set "
                    + "TRIBUTARY_DATASETS to a directory holding it extracted")
        }
    }

    /// The purchases of a CDNOW transaction log (`CDNOW_master.txt`, `CDNOW_sample.txt`: whitespace-separated customer
    /// id, [second id,] yyyymmdd, quantity, value) as (customer, UTC day number, value).
    public static func transactions(_ name: String) throws -> [(customer: String, day: Int, value: Double)] {
        var result: [(customer: String, day: Int, value: Double)] = []
        for (number, line) in try lines(name).enumerated() {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 4 else { continue }
            let dateField = fields[fields.count - 3]
            guard dateField.count == 8, let date = Int(dateField), let value = Double(fields[fields.count - 1]) else {
                if number == 0 { continue }  // CDNOW_master.txt's header
                throw Unavailable(description: "\(name) line \(number + 1): cannot read '\(line)'")
            }
            let day = CustomerSummary.dayNumber(year: date / 10_000, month: date / 100 % 100, day: date % 100)
            result.append((String(fields[0]), day, value))
        }
        return result
    }
}
