import Foundation
import PeerCore

/// peer's JSON dates: ISO 8601 in UTC with whole seconds (`2026-11-27T01:02:03Z`), the format Foundation's
/// `.iso8601` strategies read and write, formatted and parsed by `PeerCore.ISO8601` instead: Foundation's
/// strategies build a calendar in the current time zone and load ICU's data for it (docs/benchmarks.md).
/// Reading also accepts fractions and offsets.
extension JSONEncoder.DateEncodingStrategy {
    public static let peerISO8601: Self = .custom { date, encoder in
        var container = encoder.singleValueContainer()
        try container.encode(date.iso8601)
    }
}

extension JSONDecoder.DateDecodingStrategy {
    public static let peerISO8601: Self = .custom { decoder in
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let time = ISO8601.parse(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "\(text) is not an ISO 8601 date (2026-11-27T01:02:03Z)")
        }
        return Date(timeIntervalSince1970: Double(time.seconds) + Double(time.nanoseconds) / 1e9)
    }
}

extension Date {
    /// `2026-11-27T01:02:03Z`.
    public var iso8601: String { ISO8601.format(seconds: Int64(timeIntervalSince1970.rounded(.down))) }
}
