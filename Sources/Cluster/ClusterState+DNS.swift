import DNSPlanning
import PeerCore

extension ClusterState {
    /// What the leader's DNS work sees of this state at `now` (on the node's lease clock): the app nodes as DNS
    /// members, this node's lease while it holds, and whether its view has settled. The DNS service and the
    /// simulations build it here, so both step the reconciler on the same view.
    public func dnsView(now: Instant) -> DNSReconciler.View {
        let members = appMembers.map { m in
            // A suspect still serves: only a death (which a live member cannot fail to refute) removes a record.
            DNSMember(name: m.id.name, address: publicAddresses[m.id] ?? m.app.address, serving: m.status != .dead && m.app.healthy == true)
        }
        let held = lease.holding.flatMap { h in
            lease.validTerm(now: now) == h.term
                ? DNSReconciler.Lease(term: h.term, validUntil: h.validUntil, confirmedAt: h.confirmedAt, contested: h.contested) : nil
        }
        let others = appMembers.filter { $0.id != me && $0.status == .alive }.count
        return DNSReconciler.View(members: members, lease: held, settled: settled(now: now, margin: .seconds(1)), otherCandidates: others)
    }
}
