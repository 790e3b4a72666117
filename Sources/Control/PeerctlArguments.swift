/// `peerctl`'s command line as people write it: the connection options (`--peer`, `--cert`, `--key`, `--ca`,
/// `--config`, `--socket`) also before the subcommand, as the docs show them for CI
/// (`peerctl --peer HOST:PORT --cert … --key … --ca … deploy IMAGE`). The argument parser reads options after
/// the subcommand only, so they are moved there.
public enum PeerctlArguments {
    /// The connection options that take a value.
    static let connection: Set<String> = ["--peer", "--cert", "--key", "--ca", "--node", "--config", "--socket"]

    /// `arguments` without the program name. Options before the first subcommand word move to the end; for
    /// `tls`, whose own `--cert`/`--key` are the origin pair, the operator's pair becomes `--operator-cert` and
    /// `--operator-key`.
    public static func hoisted(_ arguments: [String]) -> [String] {
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard connection.contains(name) else { break }
            if argument.contains("=") {
                leading.append(argument)
                index += 1
            } else if index + 1 < arguments.count {
                leading += [argument, arguments[index + 1]]
                index += 2
            } else {
                break  // a missing value: left for the parser to explain
            }
        }
        guard !leading.isEmpty else { return arguments }
        let rest = Array(arguments[index...])
        if rest.first == "tls" {
            leading = leading.map { argument in
                if argument == "--cert" || argument.hasPrefix("--cert=") { return argument.replacingPrefix("--cert", with: "--operator-cert") }
                if argument == "--key" || argument.hasPrefix("--key=") { return argument.replacingPrefix("--key", with: "--operator-key") }
                return argument
            }
        }
        // Before a `--` that ends the options, if there is one.
        if let end = rest.firstIndex(of: "--") { return Array(rest[..<end]) + leading + Array(rest[end...]) }
        return rest + leading
    }
}

extension String {
    fileprivate func replacingPrefix(_ prefix: String, with replacement: String) -> String {
        hasPrefix(prefix) ? replacement + dropFirst(prefix.count) : self
    }
}
