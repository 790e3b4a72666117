/// A point on a monotonic timeline, as nanoseconds since an arbitrary origin.
///
/// Protocol state machines take time only as an `Instant` argument, so a test can drive them
/// with a manual clock and a daemon with the system's monotonic clock.
public struct Instant: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &- rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Instant) -> Duration {
        .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds)
    }

    public var description: String { "t+\(Duration.nanoseconds(nanoseconds).compactDescription)" }
}

extension Duration {
    /// Whole nanoseconds, saturating at `Int64` bounds.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled &+ attoseconds / 1_000_000_000
    }

    public var milliseconds: Int64 { nanoseconds / 1_000_000 }

    public var seconds: Double { Double(nanoseconds) / 1e9 }

    /// `1.234s`, `87ms`, `250µs`: what operators read in progress lines and logs.
    public var compactDescription: String {
        let ns = nanoseconds
        if abs(ns) >= 1_000_000_000 {
            let tenths = Double(ns) / 1e9
            return "\((tenths * 1000).rounded() / 1000)s"
        }
        if abs(ns) >= 1_000_000 { return "\(ns / 1_000_000)ms" }
        return "\(ns / 1_000)µs"
    }
}
