import Foundation
import Yams

/// A typed view of one YAML mapping that remembers its key path, for errors that say where.
struct Section {
    let file: String
    let key: String
    let node: Yams.Node
    let mapping: Yams.Node.Mapping

    init(file: String, key: String, node: Yams.Node) throws(ConfigError) {
        self.file = file
        self.key = key
        self.node = node
        guard let mapping = node.mapping else {
            throw ConfigError(
                file: file, key: key, line: node.mark.map { $0.line }, problem: "must be a mapping of keys to values",
                fix: key.isEmpty ? "see deploy/peer.example.yml" : "indent the keys of \(key) under it")
        }
        self.mapping = mapping
    }

    func path(_ child: String) -> String { key.isEmpty ? child : child.isEmpty ? key : "\(key).\(child)" }

    func error(_ child: String, problem: String, fix: String) -> ConfigError {
        ConfigError(file: file, key: path(child), line: value(child)?.mark.map { $0.line } ?? node.mark.map { $0.line }, problem: problem, fix: fix)
    }

    func check(_ child: String, _ value: String, _ ok: Bool, _ problem: String, fix: String) throws(ConfigError) {
        if !ok { throw error(child, problem: "\"\(value)\" \(problem)", fix: fix) }
    }

    func value(_ child: String) -> Yams.Node? {
        guard !child.isEmpty else { return nil }
        return mapping[Yams.Node(child)]
    }

    func allowOnly(_ keys: [String]) throws(ConfigError) {
        for (k, _) in mapping {
            guard let name = k.string else { continue }
            if !keys.contains(name) {
                let suggestion = keys.min { Self.distance($0, name) < Self.distance($1, name) }
                let near = suggestion.map { Self.distance($0, name) <= 3 ? " (did you mean \($0)?)" : "" } ?? ""
                throw ConfigError(
                    file: file, key: path(name), line: k.mark.map { $0.line }, problem: "is not a known key\(near)",
                    fix: "known keys here: \(keys.joined(separator: ", ")); see docs/configuration.md")
            }
        }
    }

    func section(_ child: String, required: Bool = false) throws(ConfigError) -> Section? {
        guard let value = value(child), value != Yams.Node("~"), !(value.scalar?.string == "null") else {
            if required { throw error(child, problem: "is missing", fix: "add a \(child): section (see docs/configuration.md)") }
            return nil
        }
        return try Section(file: file, key: path(child), node: value)
    }

    func sectionList(_ child: String) throws(ConfigError) -> [Section] {
        guard let value = value(child) else { return [] }
        guard let sequence = value.sequence else { throw error(child, problem: "must be a list", fix: "start each entry with '- '") }
        var result: [Section] = []
        for (index, item) in sequence.enumerated() {
            result.append(try Section(file: file, key: "\(path(child))[\(index)]", node: item))
        }
        return result
    }

    func string(_ child: String, required: Bool = false) throws(ConfigError) -> String? {
        guard let value = value(child) else {
            if required { throw error(child, problem: "is missing", fix: "set \(path(child)) (see docs/configuration.md)") }
            return nil
        }
        guard let scalar = value.scalar else { throw error(child, problem: "must be a single value", fix: "write \(child): VALUE") }
        if scalar.string.isEmpty && required { throw error(child, problem: "is empty", fix: "set a value") }
        return scalar.string
    }

    func int(_ child: String, required: Bool = false, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let text = try string(child, required: required) else { return nil }
        guard let number = Int(text), range.contains(number) else {
            throw error(
                child, problem: "\"\(text)\" is not a whole number from \(range.lowerBound) to \(range.upperBound)", fix: "e.g. \(child): 8080")
        }
        return number
    }

    func bool(_ child: String) throws(ConfigError) -> Bool? {
        guard let text = try string(child) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error(child, problem: "\"\(text)\" is not true or false", fix: "\(child): true")
        }
    }

    func duration(_ child: String, min: Duration = .zero, max: Duration? = nil) throws(ConfigError) -> Duration? {
        guard let text = try string(child) else { return nil }
        guard let duration = Duration(configString: text) else {
            throw error(child, problem: "\"\(text)\" is not a duration", fix: "write a number with a unit: 250ms, 30s, 5m")
        }
        if duration < min || (max.map { duration > $0 } ?? false) {
            let bounds = max.map { "from \(min.compactDescription) to \($0.compactDescription)" } ?? "at least \(min.compactDescription)"
            throw error(child, problem: "\(text) is out of range", fix: "use a duration \(bounds)")
        }
        return duration
    }

    func stringList(_ child: String) throws(ConfigError) -> [String] {
        guard let value = value(child) else { return [] }
        guard let sequence = value.sequence else { throw error(child, problem: "must be a list", fix: "write one '- item' per line") }
        var result: [String] = []
        for item in sequence {
            guard let s = item.scalar?.string else { throw error(child, problem: "must hold plain values", fix: "quote each item") }
            result.append(s)
        }
        return result
    }

    func stringMap(_ child: String) throws(ConfigError) -> [String: String] {
        guard let value = value(child) else { return [:] }
        guard let mapping = value.mapping else { throw error(child, problem: "must be a mapping", fix: "write KEY: value lines under \(child)") }
        var result: [String: String] = [:]
        for (k, v) in mapping {
            guard let key = k.string, let s = v.scalar?.string else {
                throw error(child, problem: "must map names to plain values", fix: "quote values that contain ':' or '#'")
            }
            result[key] = s
        }
        return result
    }

    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let old = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = old
            }
        }
        return row[b.count]
    }
}
