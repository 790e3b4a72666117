import Deployment
import Foundation
import PeerCore

/// `peerctl deploy` and `--follow`: each hears its own intent's events.
extension RolloutService {

    func watch(_ id: String, first: RolloutEvent) -> AsyncStream<RolloutEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: RolloutEvent.self)
        continuation.yield(first)
        watchers[UUID()] = Watcher(id: id, continuation: continuation, unknownUntil: clock.now() + .seconds(30))
        notifyWatchers()
        return stream
    }

    func broadcast(to id: String, _ event: RolloutEvent) {
        for watcher in watchers.values where watcher.id == id { watcher.continuation.yield(event) }
    }

    /// Each watcher hears the phases of its own intent and, once it has ended, its result; a watcher whose
    /// intent was replaced by a newer one hears that.
    func notifyWatchers() {
        guard !watchers.isEmpty else { return }
        let view = view()
        let members = view.members
        let known = node.known(members, leader: view.leader)
        let reports = node.reports(members)
        let alive = node.alive(members)
        let now = clock.now()
        for (key, var watcher) in watchers {
            // The newest copy (a cancellation is newer than the intent it stops).
            guard let intent = known.filter({ $0.id == watcher.id }).max(by: { $1.isNewer(than: $0) }) ?? watcher.intent else {
                if now >= watcher.unknownUntil {
                    watcher.continuation.yield(
                        .finished(
                            id: watcher.id, image: "?", succeeded: false, reason: "this node never heard of rollout \(watcher.id); see peerctl status"
                        ))
                    watcher.continuation.finish()
                    watchers[key] = nil
                }
                continue
            }
            watcher.intent = intent
            for (name, report) in reports.sorted(by: { $0.key < $1.key }) where report.intent == intent.id && watcher.seen[name] != report {
                watcher.seen[name] = report
                watcher.continuation.yield(.node(name, phase: report.phase.rawValue, reason: report.reason))
            }
            watchers[key] = watcher
            var end: RolloutEvent?
            switch Rollout.outcome(intent: intent, reports: reports, alive: alive) {
            case .running:
                if let newer = RolloutNode.newest(in: members, leader: view.leader, holding: node.intent), newer.isNewer(than: intent),
                    newer.id != intent.id,
                    node.intent?.id == newer.id
                {
                    end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: "replaced by rollout \(newer.id) of \(newer.image)")
                }
            case .succeeded: end = .finished(id: intent.id, image: intent.image, succeeded: true, reason: nil)
            case .failed(let node, let reason): end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: "\(node): \(reason)")
            case .cancelled(let reason): end = .finished(id: intent.id, image: intent.image, succeeded: false, reason: reason)
            }
            if let end {
                watcher.continuation.yield(end)
                watcher.continuation.finish()
                watchers[key] = nil
            }
        }
    }
}
