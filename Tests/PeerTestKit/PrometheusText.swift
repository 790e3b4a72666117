import Foundation

/// Prometheus' text exposition format, parsed as a scraper would (for tests of `/metrics`).
public struct PrometheusText: Sendable {
    public struct Sample: Sendable, Hashable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public var samples: [Sample]
    /// `# TYPE name kind` lines.
    public var types: [String: String]

    /// Throws on a line that is neither a comment nor `name{labels} value`.
    public init(_ text: String) throws {
        samples = []
        types = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ")
                if parts.count >= 4, parts[1] == "TYPE" { types[String(parts[2])] = String(parts[3]) }
                continue
            }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw Malformed(line: line)
            }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let open = series.firstIndex(of: "{") {
                guard series.last == "}" else { throw Malformed(line: line) }
                name = String(series[..<open])
                let body = series[series.index(after: open)..<series.index(before: series.endIndex)]
                for pair in body.split(separator: ",") where !pair.isEmpty {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2, kv[1].hasPrefix("\""), kv[1].hasSuffix("\"") else { throw Malformed(line: line) }
                    labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
                }
            }
            guard name.range(of: "^[a-zA-Z_:][a-zA-Z0-9_:]*$", options: .regularExpression) != nil else { throw Malformed(line: line) }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
    }

    public struct Malformed: Error, CustomStringConvertible {
        public var line: String
        public var description: String { "not Prometheus text: \(line)" }
    }

    /// The sum of the samples named `name` whose labels include `matching`.
    public func value(_ name: String, _ matching: [String: String] = [:]) -> Double? {
        let found = samples.filter { sample in sample.name == name && matching.allSatisfy { k, v in sample.labels[k] == v } }
        return found.isEmpty ? nil : found.map(\.value).reduce(0, +)
    }

    /// Scrapes a `/metrics` URL.
    public static func scrape(_ url: String) async throws -> PrometheusText {
        let answer = try await TestBed.get(url)
        return try PrometheusText(answer.body)
    }
}
