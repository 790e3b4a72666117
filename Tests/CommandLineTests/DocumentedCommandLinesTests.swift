import ArgumentParser
import Control
import Foundation
import Testing

@testable import peerctl
@testable import peerd

/// Every `peerctl` and `peerd` command line in the README and docs/ is one the real argument parsers accept: a
/// renamed option or subcommand cannot leave the guide behind (a documented `peerctl --peer … deploy` once failed
/// with "Unknown option"). Lines in code blocks are taken as written; inline ones too, with their placeholders
/// (IMAGE, NODE, …) filled in, `[optional]` parts included and the first of `a|b` alternatives; a bare mention of
/// a command in prose (`peerctl join`) must name one that exists.
///
/// Mutations checked: renaming `--sha256` of `peerctl join`, and removing the `who` subcommand → caught.
@Suite struct DocumentedCommandLinesTests {
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    static let samples: [String: String] = [
        "IMAGE": "ghcr.io/you/shop:1.0.0", "FILE": "web-2.peer-join", "NODE": "web-2", "NAME": "web-2", "IP": "203.0.113.11",
        "PUBLIC": "203.0.113.11", "PRIVATE": "10.0.0.6", "PATH": "/etc/peer/peer.yml", "ID": "k3x9q2ab", "HOST:PORT": "203.0.113.10:7946",
        "C": "operator.pem", "K": "operator-key.pem", "CA": "ca.pem", "PEM": "origin.pem", "DIR": "/tmp/peer-root", "CHECK": "3f9c0e51a7d2b8e46c10",
    ]

    /// Command lines from Markdown: whole lines of shell and YAML code blocks (continuations joined; not the
    /// diagrams of plain blocks) and inline code spans.
    static func commandLines(in text: String) -> [(line: String, inBlock: Bool)] {
        var found: [(String, Bool)] = []
        var inBlock = false
        var commands = false
        var pending = ""
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("```") {
                inBlock.toggle()
                commands = inBlock && ["```sh", "```bash", "```yaml"].contains(line)
                continue
            }
            if inBlock {
                guard commands else { continue }
                let joined = pending + line
                if joined.hasSuffix("\\") {
                    pending = String(joined.dropLast()) + " "
                    continue
                }
                pending = ""
                if joined.hasPrefix("peerctl ") || joined.hasPrefix("peerd ") { found.append((joined, true)) }
                continue
            }
            var rest = Substring(line)
            while let open = rest.firstIndex(of: "`"), let close = rest[rest.index(after: open)...].firstIndex(of: "`") {
                let code = String(rest[rest.index(after: open)..<close])
                if code.hasPrefix("peerctl ") || code.hasPrefix("peerd ") { found.append((code, false)) }
                rest = rest[rest.index(after: close)...]
            }
        }
        return found
    }

    /// The arguments a documented line stands for.
    static func arguments(_ line: String) -> [String] {
        var text = line
        for end in [" &&", " #", " ||", " >"] { if let cut = text.range(of: end) { text = String(text[..<cut.lowerBound]) } }
        text = text.replacingOccurrences(of: "\\|", with: "|").replacingOccurrences(of: "[", with: " ").replacingOccurrences(of: "]", with: " ")
        // GitHub Actions expressions (`${{ secrets.PEER_ADDR }}`): a value.
        text = text.replacingOccurrences(of: #""?\$\{\{[^}]*\}\}"?"#, with: "x", options: .regularExpression)
        var words: [String] = []
        for word in text.split(separator: " ").map(String.init).dropFirst() {
            let first = word.split(separator: "|").first.map(String.init) ?? word
            if first == "…" {
                // An elided value after an option; at the end of a line of options only, "any subcommand".
                // `--peer …`: the connection options as shown elsewhere.
                if let last = words.last, last.hasPrefix("--") {
                    words += last == "--peer" ? ["203.0.113.10:7946", "--cert", "c.pem", "--key", "k.pem", "--ca", "ca.pem"] : ["x"]
                }
                continue
            }
            words.append(samples[first] ?? first)
        }
        if let last = words.last, !words.contains(where: { !$0.hasPrefix("-") && !$0.contains(".") && !$0.contains(":") }), last != "--help" {
            words.append("status")
        }
        return words
    }

    static func parse(_ program: String, _ arguments: [String]) -> String? {
        do {
            if program == "peerd" {
                _ = try Peerd.parseAsRoot(arguments)
            } else {
                _ = try Peerctl.parseAsRoot(PeerctlArguments.hoisted(arguments))
            }
            return nil
        } catch {
            if case let exit as CleanExit = error, "\(exit)".contains("help") || "\(exit)".isEmpty { return nil }
            return program == "peerd" ? Peerd.message(for: error) : Peerctl.message(for: error)
        }
    }

    @Test func everyDocumentedCommandLineParses() throws {
        let files =
            ["README.md"]
            + (try FileManager.default.contentsOfDirectory(atPath: Self.root.path + "/docs")).filter { $0.hasSuffix(".md") }.sorted()
            .map { "docs/" + $0 }
        var checked = 0
        var wrong: [String] = []
        for file in files {
            let text = try String(contentsOf: Self.root.appendingPathComponent(file), encoding: .utf8)
            for (line, inBlock) in Self.commandLines(in: text) {
                let program = line.hasPrefix("peerd") ? "peerd" : "peerctl"
                var arguments = Self.arguments(line)
                var problem = Self.parse(program, arguments)
                // Prose that shows an option and leaves the command's arguments out (`peerctl join --root DIR`):
                // the arguments filled in, the options as written.
                while !inBlock, let missing = problem, missing.contains("Missing expected argument"), arguments.count < 12 {
                    // `'<name>'` (an argument) or `'--address <address>'` (a required option).
                    let option = missing.split(separator: "'").dropFirst().first?.split(separator: " ").first.map(String.init)
                    if let option, option.hasPrefix("--") {
                        arguments += [option, option == "--address" ? "203.0.113.12" : "x"]
                    } else {
                        arguments.append("web-9")
                    }
                    problem = Self.parse(program, arguments)
                }
                guard var problem else {
                    checked += 1
                    continue
                }
                // A mention in prose of a command without its arguments: the command must exist.
                if !inBlock, !arguments.contains(where: { $0.hasPrefix("-") }), Self.parse(program, arguments + ["--help"]) == nil {
                    checked += 1
                    continue
                }
                problem = problem.split(separator: "\n").first.map(String.init) ?? problem
                wrong.append("\(file): `\(line)` → \(arguments.joined(separator: " ")): \(problem)")
            }
        }
        #expect(wrong.isEmpty, "\(wrong.joined(separator: "\n"))")
        #expect(checked > 80, "the docs' command lines were found (\(checked))")
    }
}
