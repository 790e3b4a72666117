/// Where shells read time from. Protocol logic never calls this itself: it is handed `now`.
public protocol PeerClock: Sendable {
    func now() -> Instant
    func sleep(for duration: Duration) async throws
}

/// The system's monotonic clock.
public struct SystemClock: PeerClock {
    private static let origin = ContinuousClock.now

    public init() {}

    public func now() -> Instant {
        Instant(nanoseconds: (ContinuousClock.now - Self.origin).nanoseconds)
    }

    public func sleep(for duration: Duration) async throws {
        try await Task.sleep(for: duration)
    }
}
