import DNSPlanning
import PeerCore

extension ClusterState {
    /// What the leader's DNS work sees of this state at `now` (on the node's lease clock): the app nodes as DNS
    /// members, this node's lease while it holds, and whether its view has settled. The DNS service and the
    /// simulations build it here, so both step the reconciler on the same view.
    public func dnsView(now: Instant) -> DNSReconciler.View {
        var members = appMembers.map { m in
            // A suspect still serves: only a death (which a live member cannot fail to refute) removes a record.
            DNSMember(name: m.id.name, address: publicAddresses[m.id] ?? m.app.address, serving: m.status != .dead && m.app.healthy == true)
        }
        // Members taken out of the cluster, and witnesses (a node made one online), serve no more: their records go
        // — known by the comment that names them, or by the public address the configuration gave them, unless an
        // app node is at that address now.
        let addresses = Set(members.compactMap(\.address))
        for gone in configuration?.withoutApp ?? [] where !members.contains(where: { $0.name == gone.id.name }) {
            let address = gone.publicAddress.flatMap { addresses.contains($0) ? nil : $0 }
            members.append(DNSMember(name: gone.id.name, address: address, serving: false))
        }
        let held = lease.holding.flatMap { h in
            lease.validTerm(now: now) == h.term
                ? DNSReconciler.Lease(term: h.term, validUntil: h.validUntil, confirmedAt: h.confirmedAt, contested: h.contested) : nil
        }
        let others = appMembers.filter { $0.id != me && $0.status == .alive }.count
        return DNSReconciler.View(members: members, lease: held, settled: settled(now: now, margin: .seconds(1)), otherCandidates: others)
    }
}
