import Foundation
import Logging

/// One JSON object per line on stderr, for journald / Loki / any log shipper:
/// `{"ts":"…","level":"info","logger":"peerd","msg":"…","deploy.id":"…",…}`. Metadata keys stay as they are
/// (dotted: `peer.node`, `deploy.image`), so queries can use them directly.
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
        let level = event.level, message = event.message, explicit = event.metadata, source = event.source
        var object: [String: String] = [:]
        for (key, value) in metadata.merging(explicit ?? [:], uniquingKeysWith: { $1 }) {
            object[key] = "\(value)"
        }
        object["ts"] = Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        object["level"] = level.rawValue
        object["logger"] = label
        object["msg"] = message.description
        object["source"] = source
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        data.append(UInt8(ascii: "\n"))
        // One write(2) per line: lines from different threads never interleave.
        FileHandle.standardError.write(data)
    }
}
