import Cluster
import Deployment
import Foundation
import Leadership
import Logging
import Membership
import NIOCore
import PeerCore

/// The leader's side of deploys, and how requests reach it.
extension RolloutService {

    /// Sends a request to the leader (or carries it out here if this node leads) and waits for its answer. A
    /// leader that does not answer (paused, cut off, killed) is given up on for the next one, if one is elected
    /// in time: the request's ref is the intent's id, so a leader that took it already answers "accepted" again.
    func toLeader(_ request: RolloutMessage.Request) async throws(Failure) -> Accepted {
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.lease != new.lease }
        defer { cluster.unwatch(changes) }
        // An election may be under way: long enough for a lease to run out and the next to be won.
        let giveUp = clock.now() + leaderWait
        var silent: Lease.Leader?
        while true {
            var leader = cluster.current.lease.knownLeader(now: clock.now())
            while leader == nil || leader == silent, clock.now() < giveUp {
                await changes.wait(atMost: giveUp - clock.now(), clock: clock)
                leader = cluster.current.lease.knownLeader(now: clock.now())
            }
            guard let leader, leader != silent else {
                throw .unavailable(
                    silent.map { "the leader \($0.id) did not answer and no other was elected; nothing was started here; try again" }
                        ?? "no leader: this node cannot see a majority of the voters, so it takes no deploy (a node on the minority side of a partition refuses); see peerctl who and peerctl status"
                )
            }
            if leader.id.name == me {
                switch await lead(request) {
                case .success(let accepted): return accepted
                case .failure(.unavailable) where clock.now() < giveUp:
                    // Its lease is just starting or just ending here: ask again once the lease moves (a second
                    // at most), this node if it leads by then, the next leader otherwise.
                    await changes.wait(atMost: min(.seconds(1), giveUp - clock.now()), clock: clock)
                case .failure(let failure): throw failure
                }
                continue
            }
            guard let answer = await forward(request, to: leader.id) else {
                // Its answer may have been lost after it took the request: then the intent is in the gossip.
                if let taken = node.known(view().members, leader: leader.id.name).first(where: { $0.id == request.ref }) {
                    return Accepted(id: taken.id, image: taken.image, holders: 0, nodes: taken.order.count)
                }
                logger.warning(
                    "the leader did not answer a rollout request", metadata: ["mesh.member": "\(leader.id)", "lease.term": "\(leader.term)"])
                silent = leader
                continue
            }
            if let accepted = answer.accepted {
                return Accepted(id: accepted, image: answer.image ?? "?", holders: answer.holders ?? 0, nodes: answer.nodes ?? 0)
            }
            let why = answer.error ?? "refused"
            if answer.code == "unavailable", clock.now() < giveUp {
                // It answered but took nothing: its lease is just starting (the request came before it knew it
                // leads) or just ending. Ask again once the lease moves (a second at most): the same leader if it
                // leads by then, the next one otherwise. (A leader that does not answer at all is given up on.)
                await changes.wait(atMost: min(.seconds(1), giveUp - clock.now()), clock: clock)
                continue
            }
            throw answer.code == "unavailable" ? .unavailable(why) : answer.code == "not-found" ? .notFound(why) : .refused(why)
        }
    }

    /// The leader's side: one request at a time becomes the next intent (``RolloutNode/propose``, synchronous on
    /// this actor, so two requests never get the same number); accepted once a majority holds it, otherwise
    /// cancelled and refused.
    func lead(_ request: RolloutMessage.Request) async -> Result<Accepted, Failure> {
        guard let fence = cluster.current.fence(now: clock.now()) else {
            return .failure(.unavailable("this node no longer leads; try again in a few seconds"))
        }
        if request.op == .cancel {
            guard let current = node.intent, request.id == nil || request.id == current.id else {
                return .failure(.notFound("no rollout \(request.id ?? "") to cancel; the current one is \(node.intent?.id ?? "none")"))
            }
            guard let directives = node.cancel(current.id, reason: "cancelled by \(request.requestedBy)", members: view().members) else {
                return .failure(.refused("rollout \(current.id) is not running; nothing to cancel"))
            }
            logger.warning("rollout cancelled", metadata: ["deploy.id": "\(current.id)", "deploy.requested_by": "\(request.requestedBy)"])
            await carryOut(directives)
            return .success(Accepted(id: current.id, image: current.image, holders: 0, nodes: current.order.count))
        }
        let status = await engine.status()
        var ask = settings
        ask.id = request.ref  // the same request twice (a retry through another route) is one intent
        ask.image = request.image
        ask.requestedBy = request.requestedBy
        // A rollout that just finished may still look running here for a gossip round or two.
        let changes = Wakeup()
        cluster.watch(changes) { old, new in old.members != new.members }
        defer { cluster.unwatch(changes) }
        let patience = clock.now() + .seconds(3)
        var proposed: RolloutIntent?
        while proposed == nil {
            if let taken = node.intent, taken.id == ask.id {
                proposed = taken
                break
            }
            do {
                let (intent, directives) = try node.propose(
                    ask, term: fence.term, serving: status.serving?.image, previous: status.previousImage, view: view())
                await carryOut(directives)
                proposed = intent
            } catch .busy where clock.now() < patience {
                await changes.wait(atMost: patience - clock.now(), clock: clock)
            } catch {
                return .failure(.refused(error.description))
            }
        }
        let intent = proposed!
        let deadline = clock.now() + replicationTimeout
        while true {
            let (holders, needed) = Rollout.replication(of: intent, reports: node.reports(view().members))
            if holders >= needed { return .success(Accepted(id: intent.id, image: intent.image, holders: holders, nodes: intent.order.count)) }
            if clock.now() >= deadline {
                let why =
                    "not replicated: \(holders) of \(intent.order.count) app nodes persisted deploy \(intent.id) within \(replicationTimeout) (a majority, \(needed), must); it was cancelled and nothing changed; see peerctl status for nodes that are down"
                if let undo = node.cancel(intent.id, reason: why, members: view().members) { await carryOut(undo) }
                logger.error("rollout not replicated", metadata: ["deploy.id": "\(intent.id)", "deploy.holders": "\(holders)"])
                return .failure(.refused(why))
            }
            await changes.wait(atMost: deadline - clock.now(), clock: clock)
        }
    }

    /// Sends a request to the leader over this node's link to it; nil if it cannot be sent or no answer comes.
    func forward(_ request: RolloutMessage.Request, to leader: MemberID) async -> RolloutMessage.Answer? {
        guard let message = try? JSONEncoder().encode(RolloutMessage.rolloutRequest(request)) else { return nil }
        let ref = request.ref
        // Registered before the request leaves, so that no answer comes before its waiter; the leader may take
        // up to the replication timeout to answer.
        // (The leader may take the engine's status, 3 s for a rollout that just ended to look ended, and the
        // replication timeout.)
        let sender = Task { [links, clock, replicationTimeout] in
            if await links.send(ByteBuffer(bytes: message), to: leader) { try? await clock.sleep(for: replicationTimeout + .seconds(10)) }
            self.resolve(ref, nil, from: leader)
        }
        defer { sender.cancel() }
        return await withCheckedContinuation { pending[ref] = (leader, $0) }
    }

    /// Only the member the request went to answers it (a retry at the next leader reuses the ref: a late answer
    /// of the one before must not stand for it).
    func resolve(_ ref: String, _ answer: RolloutMessage.Answer?, from member: MemberID) {
        guard let waiting = pending[ref], waiting.leader == member else { return }
        pending[ref] = nil
        waiting.continuation.resume(returning: answer)
    }

    /// A member's message: a request to this node as leader, or an answer to one of ours.
    func received(_ message: ByteBuffer, from member: MemberID) async {
        guard let decoded = try? JSONDecoder().decode(RolloutMessage.self, from: Data(buffer: message)) else {
            logger.warning("undecodable rollout message", metadata: ["mesh.member": "\(member)"])
            return
        }
        switch decoded {
        case .rolloutAnswer(let answer):
            resolve(answer.ref, answer, from: member)
        case .rolloutRequest(let request):
            logger.info(
                "rollout request forwarded",
                metadata: ["mesh.member": "\(member)", "deploy.op": "\(request.op)", "deploy.requested_by": "\(request.requestedBy)"])
            var answer = RolloutMessage.Answer(ref: request.ref)
            switch await lead(request) {
            case .success(let accepted):
                answer.accepted = accepted.id
                answer.image = accepted.image
                answer.holders = accepted.holders
                answer.nodes = accepted.nodes
            case .failure(let failure):
                answer.error = failure.description
                switch failure {
                case .refused: answer.code = "refused"
                case .unavailable: answer.code = "unavailable"
                case .notFound: answer.code = "not-found"
                }
            }
            if let bytes = try? JSONEncoder().encode(RolloutMessage.rolloutAnswer(answer)) {
                _ = await links.send(ByteBuffer(bytes: bytes), to: member)
            }
        }
    }
}

/// Rollout requests and their answers between members (over the mesh's TLS links).
enum RolloutMessage: Codable, Sendable {
    struct Request: Codable, Sendable {
        enum Operation: String, Codable, Sendable { case deploy, rollback, cancel }
        /// Matches the answer to the request.
        var ref: String
        var op: Operation
        var image: String?
        /// For `cancel`: the rollout it must be.
        var id: String?
        var requestedBy: String
    }

    struct Answer: Codable, Sendable {
        var ref: String
        /// The rollout's id when accepted (or cancelled).
        var accepted: String?
        var image: String?
        var holders: Int?
        var nodes: Int?
        var error: String?
        /// `refused`, `unavailable` or `not-found`.
        var code: String?
    }

    case rolloutRequest(Request)
    case rolloutAnswer(Answer)
}
