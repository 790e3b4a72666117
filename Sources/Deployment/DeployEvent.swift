/// What happens to one deploy (or rollback) on this node, as it happens: the engine's output, turned into the
/// control API's lines at the edge.
public enum DeployEvent: Sendable, Hashable {
    case accepted(id: String, image: String)
    case progress(Swap.Progress)
    case result(DeployRecord)
}

/// What happens to a cluster rollout, as this node sees it.
public enum RolloutEvent: Sendable, Hashable {
    /// Accepted; `holders` of `alive` live app nodes had persisted the intent when it was.
    case accepted(id: String, image: String, holders: Int, alive: Int)
    /// Re-attached (`peerctl deploy --follow`) to a rollout of `image`.
    case following(id: String, image: String)
    /// A node's phase, or a step of its swap.
    case node(String, phase: String, reason: String?)
    case finished(id: String, image: String, succeeded: Bool, reason: String?)
}
