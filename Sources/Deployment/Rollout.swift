import PeerCore

/// A cluster-wide deploy: roll `image` across the nodes one at a time, in `order`; stop and roll back the
/// nodes already updated when one fails.
///
/// One serializer makes intents: the lease leader (any node forwards `peerctl deploy` to it) numbers each under
/// its term and answers "accepted" only once a majority of the app nodes in ``order`` has persisted it. From
/// there the intent travels by gossip and no coordinator is needed: each node decides its own next step from
/// the intent and what every node reports about it (``RolloutReport``), with the pure function
/// ``Rollout/decide(intent:me:reports:alive:now:doneSince:downSince:)``, and no node swaps for an intent that a
/// majority does not hold (``Rollout/replication(of:reports:)``). So the crash of any one node — the leader
/// included — stops nothing but that node's own part, and an intent that never reached a majority never runs.
public struct RolloutIntent: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable { case deploy, rollback }

    public var id: String
    /// Cluster-wide order of intents: the highest (seq, id) is the current one.
    public var seq: UInt64
    public var kind: Kind
    public var image: String
    /// What the cluster served before; nodes go back to it if the rollout fails.
    public var previousImage: String?
    /// What served before `previousImage`: where `peerctl rollback` goes if this rollout failed.
    public var olderImage: String?
    /// Node names, in rolling order.
    public var order: [String]
    public var requestedBy: String
    /// How long a node must have reported healthy before the next one starts.
    public var settleMs: Int64
    /// How long to wait for a node that is down before failing the rollout.
    public var nodeTimeoutMs: Int64
    /// How many nodes swap at the same time (in batches along `order`); 1 by default.
    public var parallel: Int? = nil
    /// A node that is down when its turn comes is skipped (it catches up when it is back) instead of waited
    /// for up to `nodeTimeoutMs`.
    public var skipDown: Bool? = nil
    /// The leader's term it was accepted under: an intent of a later term is newer than any of an earlier one,
    /// whatever its sequence number (a leader that did not hear of an unreplicated intent may reuse its number).
    public var term: UInt64? = nil
    /// Stopped (`peerctl rollout cancel`, or not replicated in time), and why: the nodes it reached go back to
    /// ``previousImage``, as when a node fails. A cancelled copy is newer than the same intent uncancelled.
    public var cancelled: String? = nil
    /// The leader that made it: its cancellation is taken even once it no longer leads (nil from a peerd before).
    public var proposer: String? = nil

    /// The same intent, a copy relayed by a peerd that does not know ``proposer`` included.
    public func isCopy(of other: RolloutIntent) -> Bool {
        guard proposer == nil || other.proposer == nil else { return self == other }
        var (a, b) = (self, other)
        (a.proposer, b.proposer) = (nil, nil)
        return a == b
    }

    public init(
        id: String, seq: UInt64, kind: Kind, image: String, previousImage: String?, order: [String], requestedBy: String,
        settleMs: Int64, nodeTimeoutMs: Int64
    ) {
        self.id = id
        self.seq = seq
        self.kind = kind
        self.image = image
        self.previousImage = previousImage
        self.order = order
        self.requestedBy = requestedBy
        self.settleMs = settleMs
        self.nodeTimeoutMs = nodeTimeoutMs
    }

    /// Cluster-wide order of intents: term, then sequence, then id; a cancellation after the intent it stops.
    public func isNewer(than other: RolloutIntent?) -> Bool {
        guard let other else { return true }
        return (term ?? 0, seq, id, cancelled == nil ? 0 : 1) > (other.term ?? 0, other.seq, other.id, other.cancelled == nil ? 0 : 1)
    }

    /// How many app nodes must hold an intent before any node swaps for it (and before `peerctl` hears
    /// "accepted"): a majority of ``order``.
    public var majority: Int { order.count / 2 + 1 }
}

/// What one node says about the current intent (gossiped with its state).
public struct RolloutReport: Sendable, Hashable, Codable {
    public enum Phase: String, Sendable, Hashable, Codable {
        /// It has the intent (persisted) and waits for its turn.
        case waiting
        /// Its blue/green swap to the intent's image is running.
        case swapping
        /// It serves the intent's image and passed its health check.
        case done
        /// Its swap failed (the previous version kept serving): the rollout stops.
        case failed
        /// The rollout failed elsewhere; it is swapping back to the previous image.
        case rollingBack
        /// Back on the previous image (or never left it).
        case rolledBack
    }

    public var intent: String
    public var phase: Phase
    public var reason: String?

    public init(intent: String, phase: Phase, reason: String? = nil) {
        self.intent = intent
        self.phase = phase
        self.reason = reason
    }
}

public enum Rollout {
    public enum Decision: Sendable, Hashable {
        /// Nothing to do now (wait for the turn, or already finished).
        case wait(report: RolloutReport.Phase, why: String)
        /// Swap this node to `image`.
        case swap(image: String, report: RolloutReport.Phase)
        /// Report this phase (no action).
        case report(RolloutReport.Phase, reason: String?)
    }

    public enum Outcome: Sendable, Hashable {
        case running
        case succeeded
        /// `node`: the node whose swap failed or that never reported.
        case failed(node: String, reason: String)
        /// Stopped by an operator or for want of replication; every node it reached is back.
        case cancelled(reason: String)
    }

    /// How many of the intent's nodes hold it (report on it: a node persists an intent before it reports on
    /// it), and how many must.
    public static func replication(of intent: RolloutIntent, reports: [String: RolloutReport]) -> (holders: Int, needed: Int) {
        (intent.order.filter { reports[$0]?.intent == intent.id }.count, intent.majority)
    }

    /// The state of a rollout as a whole, from the reports.
    /// `alive`: with ``RolloutIntent/skipDown``, nodes that are down do not hold the rollout up.
    public static func outcome(intent: RolloutIntent, reports: [String: RolloutReport], alive: Set<String>? = nil) -> Outcome {
        let mine = reports.filter { $0.value.intent == intent.id }
        let undone = intent.order.allSatisfy { name in
            guard let r = mine[name] else { return true }  // never started: nothing to undo
            return [.failed, .rolledBack, .waiting].contains(r.phase)
        }
        if let reason = intent.cancelled { return undone ? .cancelled(reason: reason) : .running }
        // Only the intent's own nodes fail it: a node that joined after it began (and follows it, below) does not
        // take the whole cluster back when its catch-up fails.
        if let (node, failure) = mine.first(where: { $0.value.phase == .failed && intent.order.contains($0.key) }).map({ ($0.key, $0.value) }) {
            return undone ? .failed(node: node, reason: failure.reason ?? "failed") : .running
        }
        let skipped = { (name: String) in intent.skipDown == true && alive.map { !$0.contains(name) } == true }
        if intent.order.allSatisfy({ mine[$0]?.phase == .done || skipped($0) }) { return .succeeded }
        return .running
    }

    /// This node's next step. `reports`: every member's latest report (this node's included); `alive`: members
    /// the membership sees alive; `doneSince`: when this node first saw each of the others report `done` for
    /// this intent (for the settle time); `downSince`: since when each member not alive has been so.
    public static func decide(
        intent: RolloutIntent, me: String, reports: [String: RolloutReport], alive: Set<String>, now: Instant,
        doneSince: [String: Instant], downSince: [String: Instant]
    ) -> Decision {
        let mine = reports[me].flatMap { $0.intent == intent.id ? $0 : nil }
        let failed = reports.first { $0.value.intent == intent.id && $0.value.phase == .failed && intent.order.contains($0.key) }

        // A failure anywhere, or a cancellation: undo this node's part.
        let stop = intent.cancelled.map { "rollout cancelled: \($0)" } ?? failed.flatMap { $0.key == me ? nil : "rollout failed at \($0.key)" }
        if let stop {
            switch mine?.phase {
            case .done, .swapping, .rollingBack:
                if let previous = intent.previousImage { return .swap(image: previous, report: .rollingBack) }
                return .report(.failed, reason: "no previous image to roll back to")
            case .rolledBack, .failed:
                return .wait(report: mine!.phase, why: stop)
            case .waiting, nil:
                return .report(.rolledBack, reason: "\(stop) before this node's turn")
            }
        }
        if let mine, [.done, .failed, .rolledBack].contains(mine.phase) {
            return .wait(report: mine.phase, why: "finished")
        }
        // Our turn when every node of the batches before ours is done and has been for the settle time. A node
        // the intent does not name joined the cluster after it began (added online): it follows once every node
        // of the intent is done and settled, and so serves what they serve.
        let batch = max(1, intent.parallel ?? 1)
        let position = intent.order.firstIndex(of: me)
        let before = position.map { intent.order[..<($0 / batch * batch)] } ?? intent.order[...]
        for name in before {
            let report = reports[name].flatMap { $0.intent == intent.id ? $0 : nil }
            if report?.phase == .done {
                let since = doneSince[name] ?? now
                if now - since < .milliseconds(intent.settleMs) {
                    return .wait(report: .waiting, why: "\(name) settling")
                }
                continue
            }
            if !alive.contains(name), intent.skipDown == true { continue }  // it catches up when it is back
            if position != nil, !alive.contains(name), let since = downSince[name], now - since >= .milliseconds(intent.nodeTimeoutMs) {
                // The whole rollout fails (and is undone) rather than leave the cluster half-updated.
                return .report(.failed, reason: "\(name) was down for more than \(intent.nodeTimeoutMs / 1000) s before its turn")
            }
            return .wait(report: .waiting, why: position == nil ? "joined after this rollout began: waiting for \(name)" : "waiting for \(name)")
        }
        if mine?.phase == .swapping { return .wait(report: .swapping, why: "swapping") }
        return .swap(image: intent.image, report: .swapping)
    }
}
