import Foundation

/// `KEY=value` lines (comments with #, blank lines ignored), as Docker's --env-file reads them.
public enum EnvFile {
    public struct Invalid: Error, CustomStringConvertible {
        public var path: String
        public var line: Int
        public var reason: String
        public var description: String { line == 0 ? "\(path): \(reason)" : "\(path):\(line): \(reason)" }
    }

    public static func read(_ path: String) throws(Invalid) -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Invalid(path: path, line: 0, reason: FileManager.default.fileExists(atPath: path) ? "cannot be read" : "does not exist")
        }
        var result: [String] = []
        for (index, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "="), eq != line.startIndex else {
                throw Invalid(path: path, line: index + 1, reason: "expected KEY=value")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            guard PeerConfig.isEnvName(key) else { throw Invalid(path: path, line: index + 1, reason: "\"\(key)\" is not a valid variable name") }
            result.append("\(key)=\(line[line.index(after: eq)...])")
        }
        return result
    }
}
