/// The bound on every counter that comes from the network or disk: terms, incarnations, sequence numbers.
///
/// Each is raised by one now and then (a campaign, a refutation, a deploy), so 2^62 is never reached by a
/// working cluster in any lifetime; a value above it is a corrupt file or a hostile or broken member, and is
/// refused where it enters — so that `+ 1` on an accepted value can never trap.
public enum Counter {
    public static let limit: UInt64 = 1 << 62

    /// `value` may be taken and raised.
    public static func isPlausible(_ value: UInt64) -> Bool { value <= limit }
}
