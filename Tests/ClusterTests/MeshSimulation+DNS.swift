import Cluster
import DNSPlanning
import Leadership
import PeerCore
import SimulationKit

/// The provider and the DNS shells of a ``MeshSimulation``: every node runs the leader's DNS work (the real
/// ``DNSReconciler``, called, not copied) against one simulated provider that models what Cloudflare does and
/// what the field brings:
/// - a `/batch` is one transaction (a delete or a patch of a record that is gone fails it whole);
/// - calls take time, and a write can be committed after the client gave up on it — up to the stated
///   ``Provider/lateCommit`` after the client's deadline (the allowance the fences are built on);
/// - listings are as of when the provider answered them, and age in the leader's cache;
/// - someone deletes records by hand in the dashboard;
/// - a node's token can be refused.
/// Checked at every commit: the name never has zero records, and no write of a term is applied after a write of
/// a higher term.
struct DNSWorld {
    struct Provider {
        var records: [DNSRecord] = []
        var nextID = 1
        /// The highest term any applied write carried.
        var highestTerm: UInt64 = 0
        var commits = 0
        var refused = 0
        /// How long after a client's deadline a write it gave up on may still be committed.
        var lateCommit: Duration = .milliseconds(400)
        /// Share of writes that are slow (answered late or never in time).
        var slowShare = 0.1
    }

    enum Event {
        case listed(MemberID, epoch: Int, records: [DNSRecord])
        case commit(MemberID, epoch: Int, batch: DNSBatch, term: UInt64, answerBy: Instant)
        case answered(MemberID, epoch: Int, created: [DNSRecord]?, failure: String?)
        case timedOut(MemberID, epoch: Int)
    }

    let settings: DNSReconciler.Settings
    var provider = Provider()
    var events: [(at: Instant, order: Int, event: Event)] = []
    private var order = 0
    /// Nodes whose Cloudflare token is refused.
    var badToken: Set<MemberID> = []
    var violations: [String] = []
    var writesSent = 0

    init(settings: DNSReconciler.Settings) { self.settings = settings }

    var nextEvent: Instant? { events.first?.at }

    mutating func schedule(_ event: Event, at: Instant) {
        order += 1
        let index = events.firstIndex { ($0.at, $0.order) > (at, order) } ?? events.endIndex
        events.insert((at, order, event), at: index)
    }

    mutating func seed(records: [(member: String, address: String)]) {
        for record in records {
            provider.records.append(
                DNSRecord(
                    id: "r\(provider.nextID)", type: "A", name: settings.name, content: record.address,
                    comment: DNSPlanner.comment(member: record.member, term: 0)))
            provider.nextID += 1
        }
    }

    /// The provider applies a batch as one transaction, or refuses it whole.
    mutating func commit(_ batch: DNSBatch, term: UInt64, from: MemberID, at now: Instant) -> [DNSRecord]? {
        var records = provider.records
        for record in batch.deletes {
            guard let index = records.firstIndex(where: { $0.id == record.id }) else {
                provider.refused += 1
                return nil
            }
            records.remove(at: index)
        }
        if let guarded = batch.guarded {
            guard let index = records.firstIndex(where: { $0.id == guarded.record.id }) else {
                provider.refused += 1
                return nil
            }
            records[index].comment = DNSPlanner.comment(member: guarded.member, term: term)
        }
        var created: [DNSRecord] = []
        for create in batch.creates {
            guard !records.contains(where: { $0.content == create.address }) else {
                provider.refused += 1
                return nil
            }
            let record = DNSRecord(
                id: "r\(provider.nextID)", type: "A", name: settings.name, content: create.address,
                comment: DNSPlanner.comment(member: create.member, term: term))
            provider.nextID += 1
            records.append(record)
            created.append(record)
        }
        provider.records = records
        provider.commits += 1
        if records.isEmpty { violations.append("at \(now): a write of term \(term) from \(from) left zero records") }
        if term < provider.highestTerm {
            violations.append("at \(now): a write of term \(term) from \(from) was applied after one of term \(provider.highestTerm)")
        }
        provider.highestTerm = max(provider.highestTerm, term)
        return created
    }

    /// Someone deletes the record pointing at `content` by hand, in the dashboard.
    mutating func handDelete(content: String) { provider.records.removeAll { $0.content == content } }

    /// Someone deletes a record by hand (never the last one: that would be their outage, not peer's).
    mutating func handDelete(using rng: inout SplitMix64) {
        guard provider.records.count >= 2 else { return }
        provider.records.remove(at: Int.random(in: 0..<provider.records.count, using: &rng))
    }
}

extension MeshSimulation {
    /// One DNS step of node `id` (a tick of its DNS service): the reconciler sees the state the node published.
    mutating func stepDNS(_ id: MemberID) {
        guard dns != nil, var node = nodes[id], var reconciler = node.dns, node.pausedUntil == nil else { return }
        // A node that does not lead has nothing to do (it forgets what it knew when it next leads, under a new term).
        guard node.published.lease.holding != nil || reconciler.isBusy else { return }
        let local = local(id)
        let due = node.dnsWake.map { local >= $0 } ?? true
        guard due || node.dnsSaw != node.published else { return }
        let directives = reconciler.step(node.published.dnsView(now: local), now: local)
        node.dns = reconciler
        node.dnsSaw = node.published
        // At least every second, as the service.
        node.dnsWake = min(reconciler.nextWake(now: local) ?? local + .seconds(1), local + .seconds(1))
        nodes[id] = node
        carryOutDNS(directives, from: id)
    }

    /// What the DNS shell does: the provider's calls take time; the lease's requests go to the node's mesh.
    mutating func carryOutDNS(_ directives: [DNSReconciler.Directive], from id: MemberID) {
        guard var world = dns, let node = nodes[id] else { return }
        for directive in directives {
            switch directive {
            case .verifyToken:
                let failure = world.badToken.contains(id) ? "403 9109 Invalid access token" : nil
                var dnsNode = nodes[id]!.dns!
                let next = dnsNode.tokenChecked(failure, now: local(id))
                nodes[id]!.dns = dnsNode
                dns = world
                carryOutDNS(next, from: id)
                world = dns!
            case .list:
                let lag = Duration.milliseconds(Int64.random(in: 2...40, using: &rng))
                // Listed as the provider holds it when it answers; it arrives a little later.
                world.schedule(.listed(id, epoch: node.epoch, records: []), at: now + lag)
            case .confirmLease:
                var mesh = nodes[id]!.mesh
                let out = mesh.confirmLease(now: local(id))
                nodes[id]!.mesh = mesh
                dns = world
                carryOut(out, from: id)
                world = dns!
            case .write(let batch, let term, let deadline):
                let local = local(id)
                // The shell's last check before the request leaves.
                guard nodes[id]!.mesh.lease.validTerm(now: local) == term, deadline - local > world.settings.minimumWrite else {
                    var dnsNode = nodes[id]!.dns!
                    _ = dnsNode.writeFailed("not sent", incapacity: false, now: local)
                    nodes[id]!.dns = dnsNode
                    continue
                }
                world.writesSent += 1
                let answerBy = now + (deadline - local)
                let slow = Double.random(in: 0..<1, using: &rng) < world.provider.slowShare
                let latency =
                    slow
                    ? (answerBy - now) + .nanoseconds(Int64.random(in: 0...world.provider.lateCommit.nanoseconds, using: &rng))
                    : .milliseconds(Int64.random(in: 5...80, using: &rng))
                world.schedule(.commit(id, epoch: node.epoch, batch: batch, term: term, answerBy: answerBy), at: now + latency)
                world.schedule(.timedOut(id, epoch: node.epoch), at: answerBy)
            case .stepDown(let until, _):
                var mesh = nodes[id]!.mesh
                let out = mesh.stepDown(now: local(id), until: until)
                nodes[id]!.mesh = mesh
                dns = world
                carryOut(out, from: id)
                world = dns!
            case .notice:
                break
            }
        }
        dns = world
    }

    /// The next event of the provider or of a DNS shell.
    mutating func runDNSEvent() {
        guard var world = dns, !world.events.isEmpty else { return }
        let (_, _, event) = world.events.removeFirst()
        var outcome: (MemberID, Int, (inout DNSReconciler, Instant) -> [DNSReconciler.Directive])?
        switch event {
        case .listed(let id, let epoch, _):
            let records = world.provider.records
            outcome = (id, epoch, { $0.listed(records, now: $1) })
        case .commit(let id, let epoch, let batch, let term, let answerBy):
            let created = world.commit(batch, term: term, from: id, at: now)
            let answer = now + .milliseconds(Int64.random(in: 1...10, using: &rng))
            if answer < answerBy {
                world.schedule(
                    .answered(id, epoch: epoch, created: created, failure: created == nil ? "404 81044 Record does not exist." : nil), at: answer)
            }
        case .answered(let id, let epoch, let created, let failure):
            if let created {
                outcome = (id, epoch, { $0.written(created: created, now: $1) })
            } else {
                outcome = (id, epoch, { $0.writeFailed(failure ?? "", incapacity: false, now: $1) })
            }
        case .timedOut(let id, let epoch):
            outcome = (id, epoch, { $0.writeFailed("timed out", incapacity: true, now: $1) })
        }
        dns = world
        guard let (id, epoch, report) = outcome, var node = nodes[id], node.epoch == epoch, var reconciler = node.dns else { return }
        if let until = node.pausedUntil, now < until {
            // The process reads the answer when it runs again.
            dns!.schedule(event, at: until)
            return
        }
        let directives = report(&reconciler, local(id))
        node.dns = reconciler
        nodes[id] = node
        carryOutDNS(directives, from: id)
    }

    /// After healing: every app node serves, so the name holds exactly their records.
    func dnsConverged() -> (Bool, String) {
        guard let dns else { return (true, "") }
        let want = Set(ids.filter { $0 != witness && nodes[$0] != nil }.map { Self.address($0) })
        let have = dns.provider.records.map(\.content)
        return (Set(have) == want && have.count == want.count, "records \(have.sorted()), serving \(want.sorted())")
    }
}
