#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Logging
import PeerCore

/// One JSON object per line on stderr, for journald / Loki / any log shipper:
/// `{"deploy.id":"…","level":"info","logger":"peerd","msg":"…","source":"…","ts":"…"}`, keys sorted. Metadata
/// keys stay as they are (dotted: `peer.node`, `deploy.image`), so queries can use them directly.
///
/// Written by hand rather than with Foundation's JSONSerialization and ISO8601FormatStyle: those load the
/// time-zone and locale machinery of ICU for every daemon that logs JSON, about 5 MiB of resident memory for
/// a UTC timestamp (docs/benchmarks.md, "peerd memory").
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            fields[key] = "\(value)"
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        fields["ts"] = ISO8601.format(seconds: Int64(now.tv_sec), nanoseconds: Int(now.tv_nsec), milliseconds: true)
        fields["level"] = event.level.rawValue
        fields["logger"] = label
        fields["msg"] = event.message.description
        fields["source"] = event.source
        var bytes = Array(Self.line(fields).utf8)
        bytes.append(UInt8(ascii: "\n"))
        // One write(2) per line (retried only for what a signal or a full pipe left unwritten): lines from
        // different threads never interleave.
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
            }
        }
    }

    /// A JSON object of string values with its keys sorted (RFC 8259 escaping; `/` and non-ASCII as they are).
    public static func line(_ fields: [String: String]) -> String {
        var out = "{"
        for (index, key) in fields.keys.sorted().enumerated() {
            if index > 0 { out += "," }
            appendQuoted(key, to: &out)
            out += ":"
            appendQuoted(fields[key]!, to: &out)
        }
        return out + "}"
    }

    static func appendQuoted(_ string: String, to out: inout String) {
        out += "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
