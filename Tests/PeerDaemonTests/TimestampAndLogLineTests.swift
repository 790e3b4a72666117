import Control
import Foundation
import Testing

import PeerCore
@testable import PeerDaemon

@Suite struct TimestampAndLogLineTests {
    @Test func aLineIsOneJSONObjectWithSortedKeysAndEveryStringIntact() throws {
        let fields = [
            "msg": "quote \" backslash \\ slash / newline \n tab \t bell \u{07} nul \u{00} del \u{7F}",
            "deploy.image": "127.0.0.1:5000/app:v2",
            "level": "info",
            "unicode": "héllo — 日本 🚀",
            "": "empty key",
        ]
        let line = JSONLogHandler.line(fields)
        #expect(!line.contains("\n"), "one line per event")
        #expect(line.hasPrefix("{\"\":\"empty key\",\"deploy.image\":"), "keys sorted: \(line)")
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(parsed == fields)
        #expect(JSONLogHandler.line([:]) == "{}")
    }

    @Test func timestampsMatchFoundationsISO8601InUTC() throws {
        var rng = SystemRandomNumberGenerator()
        // The wall clock of a running daemon: 1970 to 2100, leap days and century years included.
        var instants: [Int64] = [0, 86_399, 86_400, 951_782_400, 1_709_164_800, 4_102_444_799]
        for _ in 0..<5_000 { instants.append(Int64.random(in: 0...4_102_444_800, using: &rng)) }
        let style = Date.ISO8601FormatStyle()
        for seconds in instants {
            let foundation = Date(timeIntervalSince1970: Double(seconds)).formatted(style)
            #expect(ISO8601.format(seconds: seconds) == foundation, "\(seconds) s")
            #expect(ISO8601.format(seconds: seconds, nanoseconds: 999_999_999, milliseconds: true) == foundation.dropLast() + ".999Z")
            let parsed = try #require(ISO8601.parse(foundation))
            #expect(parsed.seconds == seconds && parsed.nanoseconds == 0)
        }
        #expect(ISO8601.format(seconds: 1_709_210_096, nanoseconds: 7_000_000, milliseconds: true) == "2024-02-29T12:34:56.007Z")
    }

    @Test func parsingAcceptsFractionsAndOffsetsAndRefusesImpossibleDates() {
        #expect(ISO8601.parse("2024-02-29T12:34:56.5Z")! == (1_709_210_096, 500_000_000))
        #expect(ISO8601.parse("2024-02-29T14:34:56+02:00")!.seconds == 1_709_210_096)
        #expect(ISO8601.parse("2024-02-29T07:04:56-0530")!.seconds == 1_709_210_096)
        #expect(ISO8601.parse("2024-02-29t12:34:56.123456789123z")! == (1_709_210_096, 123_456_789))
        for bad in [
            "", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00Zjunk", "2024-1-01T00:00:00Z",
            "2024-01-01T00:00:00+2400",
        ] {
            #expect(ISO8601.parse(bad) == nil, "\(bad)")
        }
    }

    /// State files and API answers written by earlier versions (Foundation's `.iso8601`) still read, and what
    /// peer writes now reads with Foundation's strategy.
    @Test func jsonDatesStayCompatibleWithFoundationsISO8601Strategy() throws {
        struct Stamp: Codable, Equatable { var at: Date }
        let stamp = Stamp(at: Date(timeIntervalSince1970: 1_764_205_323))
        let foundationEncoder = JSONEncoder()
        foundationEncoder.dateEncodingStrategy = .iso8601
        let peerEncoder = JSONEncoder()
        peerEncoder.dateEncodingStrategy = .peerISO8601
        #expect(try peerEncoder.encode(stamp) == foundationEncoder.encode(stamp))
        let foundationDecoder = JSONDecoder()
        foundationDecoder.dateDecodingStrategy = .iso8601
        let peerDecoder = JSONDecoder()
        peerDecoder.dateDecodingStrategy = .peerISO8601
        #expect(try peerDecoder.decode(Stamp.self, from: foundationEncoder.encode(stamp)) == stamp)
        #expect(try foundationDecoder.decode(Stamp.self, from: peerEncoder.encode(stamp)) == stamp)
        #expect(throws: DecodingError.self) { try peerDecoder.decode(Stamp.self, from: Data(#"{"at":"yesterday"}"#.utf8)) }
    }
}
