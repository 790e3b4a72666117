#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import PeerCore

/// The time the lease and its fences are measured in: CLOCK_MONOTONIC_RAW, the hardware's rate, which NTP does
/// not slew. The lease allows 1 % rate difference between nodes; chrony slews CLOCK_MONOTONIC by up to 8.3 %
/// (its default `maxslewrate`), a crystal is off by well under 0.01 %. (docs/architecture.md, "Time".)
enum RawMonotonic {
    private static let origin = raw()

    static func now() -> Instant { Instant(nanoseconds: raw() - origin) }

    private static func raw() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC_RAW, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }
}
