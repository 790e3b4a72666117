/// What this node announces about its app from what its checks observe: a change is announced at once, except
/// that "unhealthy" needs three failed checks in a row while the same image served healthy before (one slow
/// answer is not an outage).
public struct AppHealthDebounce: Sendable {
    public static let failuresToUnhealthy = 3
    private var failures = 0

    public init() {}

    /// The report to announce after a check observed `observed`, given what is announced now.
    public mutating func next(observed: AppReport, announced: AppReport) -> AppReport {
        failures = observed.healthy == false ? failures + 1 : 0
        var next = observed
        if observed.healthy == false, failures < Self.failuresToUnhealthy, announced.healthy == true, announced.image == observed.image {
            next.healthy = true
        }
        return next
    }
}
