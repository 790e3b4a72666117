/// What `peerd` does with the containers it finds when it starts (after a restart, a crash, even mid-swap).
///
/// Pure: it reads what the proxy routes to and what runs, and decides. The rule that keeps traffic flowing:
/// whatever the proxy routes to and still runs is kept and served as it is (no reload, no restart); everything
/// else of peer's is removed, which includes a half-started container from an interrupted swap.
public struct AdoptionPlan: Sendable, Hashable {
    /// The instance that serves from now on, if any runs.
    public var serving: AppInstance?
    /// True when the proxy config must be rewritten (it routes to a container that is gone or moved port).
    public var reroute: Bool
    /// Containers of peer's to stop and remove.
    public var remove: [ManagedContainer]
    /// The next generation number to use, above every generation seen.
    public var nextGeneration: Int
    /// One line per decision, for the log.
    public var notes: [String]

    public static func plan(
        containers: [ManagedContainer], routed: (generation: Int, hostPort: Int)?, recordedCurrent: AppInstance?,
        nextGeneration: Int
    ) -> AdoptionPlan {
        var notes: [String] = []
        let running = containers.filter { $0.instance != nil }
        var serving: AppInstance?
        var reroute = false

        if let routed, let match = running.first(where: { $0.generation == routed.generation })?.instance {
            serving = match
            if match.hostPort != routed.hostPort {
                reroute = true
                notes.append("\(match.containerName) moved to port \(match.hostPort); rerouting the proxy")
            } else {
                notes.append("adopted \(match.containerName) (\(match.image)), which the proxy serves")
            }
        } else {
            // The proxy routes to nothing that runs: prefer the recorded current instance, else the newest.
            let preferred = running.first { $0.generation == recordedCurrent?.generation } ?? running.max { $0.generation < $1.generation }
            if let instance = preferred?.instance {
                serving = instance
                reroute = true
                notes.append("the proxy routed to nothing running; routing it to \(instance.containerName)")
            } else if routed != nil {
                notes.append("the proxy routes to a container that is gone and nothing else of peer's runs")
            }
        }

        let remove = containers.filter { $0.id != serving?.containerID }
        for container in remove {
            notes.append("removing \(container.name) (generation \(container.generation), \(container.running ? "running" : "stopped"))")
        }
        let highest = containers.map(\.generation).max() ?? 0
        return AdoptionPlan(
            serving: serving, reroute: reroute, remove: remove,
            nextGeneration: max(nextGeneration, highest + 1, (routed?.generation ?? 0) + 1), notes: notes)
    }
}
