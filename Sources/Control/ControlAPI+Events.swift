import Deployment

/// The control API's lines for what the engine and the rollout service report.
extension ControlAPI.Event {
    public init(_ event: DeployEvent) {
        switch event {
        case .accepted(let id, let image): self = .accepted(id: id, image: image)
        case .progress(let progress): self = .progress(ControlAPI.ProgressLine(progress))
        case .result(let record): self = .result(record)
        }
    }

    public init(_ event: RolloutEvent) {
        switch event {
        case .accepted(let id, let image, let holders, let alive):
            self = .accepted(id: id, image: image)
            reason = "held by \(holders) of \(alive) live nodes"
        case .following(let id, let image): self = Self(type: .following, id: id, image: image)
        case .node(let name, let phase, let reason): self = .node(name, phase: phase, reason: reason)
        case .finished(let id, let image, let succeeded, let reason): self = .rollout(id: id, image: image, succeeded: succeeded, reason: reason)
        }
    }
}
