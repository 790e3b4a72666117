import Leadership
import Membership
import PeerCore

/// One node of the mesh as a pure state machine: membership (``SWIM``) and the leader ``Lease`` together, with
/// what this node announces about itself. No I/O: time comes in as `now`, randomness from a seed, and every
/// event returns the ``Directive``s the shell carries out in order (persist before the sends that follow it).
///
/// After every event whose outcome changes the ``ClusterState`` — a member's state, the leadership, this node's
/// lease or grant — the directives end with `.publish(state)`.
public struct MeshNode: Sendable {
    public typealias Swim = SWIM<AppStatus>

    /// What goes in a sealed datagram.
    public enum Datagram: Codable, Sendable, Hashable {
        case swim(Swim.Envelope)
        /// `committed`: the epoch of the sender's committed configuration; nil for the first (what a peerd from
        /// before configurations sends, and the same bytes).
        case lease(Lease.Message, committed: UInt64? = nil)
        /// A change of the cluster's configuration (``ConfiguredLease``); never a lease message.
        case configuration(ConfiguredLease.Message)
    }

    public enum Directive: Sendable, Hashable {
        /// Write the highest promised term to stable storage. If that fails, the shell must not carry out the
        /// lease messages that follow in the same batch (a promise a restart forgets is no promise).
        case persistTerm(UInt64)
        case send(Datagram, to: MemberID)
        /// A member's state changed in this node's view (this node included).
        case memberChanged(ClusterState.Member, previous: ClusterState.Member)
        /// This node started (a term) or stopped (nil) leading.
        case leadership(term: UInt64?)
        /// The cluster as this node sees it changed.
        case publish(ClusterState)
        /// Members announce (or last announced) another cluster configuration than this node's: nobody leads
        /// until they agree. Empty when they agree again.
        case configurationMismatch([MemberID])
        /// Persist the configurations members last announced (a restart must not forget that a member now out of
        /// reach runs another one).
        case persistConfigurations([MemberID: String])
        /// `relayedBy` passed on a claim of `member`'s that does not carry its signature: not taken.
        case refused(MemberID, relayedBy: MemberID)
        /// Persist the cluster's configuration, committed and proposed, before sending anything that follows.
        case persistConfiguration(committed: Configuration, pending: Configuration?)
        /// The committed configuration changed: members (who is admitted, where they are) follow it.
        case configurationCommitted(Configuration)
    }

    /// A configured member.
    public typealias Member = Configuration.Member

    public private(set) var swim: Swim
    /// The lease, bound to the cluster's configuration, and the protocol that changes it.
    public private(set) var council: ConfiguredLease
    public var lease: Lease { council.lease }
    /// The app nodes of the committed configuration.
    public var appNodes: Set<MemberID> { Set(council.committed.appNodes) }
    /// The public addresses the committed configuration gives (``ClusterState/publicAddresses``).
    public var publicAddresses: [MemberID: String] {
        Dictionary(council.committed.members.compactMap { m in m.publicAddress.map { (m.id, $0) } }, uniquingKeysWith: { a, _ in a })
    }
    public let startedAt: Instant
    /// The digest of the member list this node was set up with (members, their addresses and roles), announced
    /// with its status while the cluster runs its first configuration: nodes whose files list other members must
    /// not elect each other. nil: not compared (a test that does not care). From the first committed change on,
    /// the configuration is the cluster's own and this node announces its epoch instead (``announcedConfiguration``).
    public let configuration: String?
    /// The configuration each member last announced, as far as this node knows, this run or an earlier one.
    public private(set) var knownConfigurations: [MemberID: String]
    /// Members whose last known configuration is not this node's.
    public private(set) var mismatched: [MemberID] = []
    /// A member announced another configuration than the one known of it: compare (and persist) again.
    private var configurationsChanged = false
    /// App nodes that membership sees alive: the lease's candidates.
    private var aliveCandidates: [MemberID]
    private var published: ClusterState?
    private var membersChanged = true

    /// `members`: the member list this node was set up with, this node among them; every member votes. `stored`:
    /// the cluster's configuration as this node persisted it (committed, and a change under way), when it has taken
    /// part in one: it replaces `members`. `promised`: the term this node persisted in an earlier run.
    public init(
        me: MemberID, members: [Member], stored: (committed: Configuration, pending: Configuration?)? = nil, swim settings: SWIMSettings,
        lease leaseSettings: LeaseSettings, promised: UInt64, seed: UInt64, now: Instant, configuration: String? = nil,
        knownConfigurations: [MemberID: String] = [:]
    ) {
        var rng = SplitMix64(seed: seed)
        let (swimSeed, leaseSeed) = (rng.next(), rng.next())
        let committed = stored?.committed ?? .initial(members)
        let address = committed.member(me)?.address ?? members.first { $0.id == me }?.address ?? ""
        self.configuration = configuration
        council = ConfiguredLease(
            me: me, committed: committed, pending: stored?.pending, promised: promised, settings: leaseSettings, seed: leaseSeed, now: now)
        var app = AppStatus.none
        app.configuration = Self.announced(configuration, committed: council.committed, pending: council.pending)
        let listed = Set(committed.voters)
        self.knownConfigurations = knownConfigurations.filter { listed.contains($0.key) && $0.key != me }
        swim = Swim(
            me: me, address: address, app: app, incarnation: 1, seeds: committed.members.map { ($0.id, $0.address) }, settings: settings,
            seed: swimSeed, now: now)
        aliveCandidates = council.appNodes.sorted()
        startedAt = now
        if let configuration = announcedConfiguration {
            mismatched = self.knownConfigurations.filter { Self.listsDiffer($0.value, configuration) }
                .keys.sorted()
            _ = council.suspend(!mismatched.isEmpty, now: now)
        }
    }

    public var me: MemberID { swim.me.id }

    /// What this node announces of its configuration: the digest of its file's member list while the cluster runs
    /// its first configuration, `epoch-N` from the first committed change on.
    public var announcedConfiguration: String? { Self.announced(configuration, committed: council.committed, pending: council.pending) }

    /// A node that took a proposal is in the change protocol too: one node becoming two holds the proposal while
    /// the new node, started from its join file, announces that file's list (which names both).
    static func announced(_ digest: String?, committed: Configuration, pending: Configuration?) -> String? {
        guard let digest else { return nil }
        return committed.epoch == Configuration.Position.initial.epoch && pending == nil ? digest : "epoch-\(committed.epoch)"
    }

    /// Two members announce file lists that differ (an epoch is not a file list: see ``compareConfigurations``).
    static func listsDiffer(_ a: String, _ b: String) -> Bool { a != b && !a.hasPrefix("epoch-") && !b.hasPrefix("epoch-") }

    /// The cluster as this node sees it now.
    public var state: ClusterState {
        let appNodes = self.appNodes
        var state = ClusterState(
            me: me, members: swim.view.map { appNodes.contains($0.state.id) ? $0.state : Self.witnessed($0.state) }, appNodes: appNodes,
            lease: lease.view, startedAt: startedAt,
            startupGrace: swim.settings.startupGrace)
        state.otherConfigurations = mismatched
        state.publicAddresses = publicAddresses
        state.configuration = council.committed
        state.pendingConfiguration = council.pending
        return state
    }

    /// A witness runs no app and never leads: what it says beyond its liveness (an app, an address for DNS, a
    /// rollout intent or report, an origin certificate) is not taken from it — a witness holds no secrets and must
    /// not be able to steer the cluster.
    static func witnessed(_ member: ClusterState.Member) -> ClusterState.Member {
        var member = member
        var app = AppStatus.none
        app.certificateDaysLeft = member.app.certificateDaysLeft
        app.configuration = member.app.configuration
        // Revocations are the CA's word, not the witness's: it holds and hands them on like any member.
        app.revocations = member.app.revocations
        member.app = app
        return member
    }

    /// How far above its incarnation an unsigned state of this node may make it refute (a previous run's, signed with
    /// a key since rotated: a run changes its incarnation far less than 2^32 times); a forger would need 2^30 such
    /// refutations to reach the bound on counters.
    public static let unsignedJump: UInt64 = 1 << 32

    /// When the node next has something to do (at the latest in a second): a tick before it changes nothing.
    public func nextDeadline(now: Instant) -> Instant {
        min(swim.nextDeadline, council.nextDeadline(now: now) ?? now + .seconds(1), now + .seconds(1))
    }

    // MARK: - Events

    public mutating func tick(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(swim.tick(now: now), into: &directives)
        compareConfigurations(now: now, into: &directives)
        absorb(council.tick(now: now, aliveCandidates: aliveCandidates), now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// Proposes `members` as the cluster's next configuration: only on the leader, one member added or removed at a
    /// time (``ConfiguredLease/propose(_:now:)``). The change is committed when a majority of the old members and
    /// one of the new ones accepted it (``Directive/configurationCommitted(_:)``).
    public mutating func propose(_ members: [Member], now: Instant) throws(ConfiguredLease.Refusal) -> [Directive] {
        var directives: [Directive] = []
        absorb(try council.propose(members, now: now), now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// A datagram from `from`, an authenticated member. `signed`: whether a state carries its member's own
    /// signature over what it claims (``MemberState/proof``, checked against the certificate the member presented).
    ///
    /// Members speak only for themselves: what a member says beyond its liveness (its app, deploys, rollout intent
    /// and report, origin certificate) and its incarnation are taken from that member first-hand, or relayed with its
    /// signature. A relayed state whose claim this node cannot check — a forgery, a member whose certificate this
    /// node has not seen yet, a relay through a peerd from before signatures — is taken only when it reports a
    /// suspicion or a death at the incarnation and with the app this node holds (liveness is anyone's to report, as
    /// in SWIM; the member refutes a false one). Without the incarnation rule a relay could declare a member dead at
    /// the highest plausible incarnation, above which it could never refute.
    public mutating func receive(
        _ datagram: Datagram, from: MemberID, now: Instant, signed: (ClusterState.Member) -> Bool
    ) -> [Directive] {
        var directives: [Directive] = []
        switch datagram {
        case .swim(var envelope):
            // Its own state first-hand needs no signature — unless it jumps far above the one held: a member's shell
            // signs every state of its own, so an unsigned one there is a forgery with its key (or garbage), and taking
            // it would leave this node holding an incarnation the member itself never refutes (see below).
            if let held = swim.state(of: from), envelope.sender.incarnation > held.incarnation + Self.unsignedJump, !signed(envelope.sender) {
                directives.append(.refused(from, relayedBy: from))
                return directives
            }
            // No more than SWIM takes (a datagram full of forged entries is not a signature check each).
            envelope.gossip = Array(envelope.gossip.prefix(max(swim.settings.maxGossip, swim.view.count) + 1))
            envelope.gossip = envelope.gossip.filter { update in
                // Only a member raises its own incarnation, and only it says what its app is: a relayed state that
                // does either needs its signature. One that reports a suspicion or a death at the incarnation this node
                // holds, with the app it holds, does not.
                guard let held = swim.state(of: update.id) else { return true }
                let unsigned: Bool
                if update.id == me || update.id == from {
                    // A state of this node above its incarnation makes it refute above that: only its own signature
                    // (a previous run's) may make it jump far, or a relay could raise it past what receivers take.
                    // The sender's own state in its gossip is first-hand, as its envelope's: the same rule as above.
                    unsigned = update.incarnation > held.incarnation + Self.unsignedJump && !signed(update)
                } else {
                    unsigned =
                        update.supersedes(held) && (update.incarnation > held.incarnation || update.app.bounded() != held.app) && !signed(update)
                }
                guard unsigned else { return true }
                directives.append(.refused(update.id, relayedBy: from))
                return false
            }
            absorb(swim.receive(envelope, from: from, now: now), into: &directives)
            compareConfigurations(now: now, into: &directives)
        case .lease(let message, let committed):
            absorb(
                council.receive(.lease(message, committed: committed ?? Configuration.Position.initial.epoch), from: from, now: now), now: now,
                into: &directives)
        case .configuration(let message):
            if case .lease = message { break }
            absorb(council.receive(message, from: from, now: now), now: now, into: &directives)
        }
        publishIfChanged(into: &directives)
        return directives
    }

    /// The transport saw `member`'s connection close, or a dial to it refused.
    public mutating func connectionLost(to member: MemberID, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(swim.connectionLost(to: member, now: now), into: &directives)
        compareConfigurations(now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// A fenced action is about to be taken: ask the voters now whether they still back this leader
    /// (``Lease/confirm(now:)``); the answer shows as the published lease's `confirmedAt`.
    public mutating func confirmLease(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(council.confirm(now: now), now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// A proposal was refused as not confirmed yet: asks the voters for the round it needs
    /// (``ConfiguredLease/confirmForChange(now:)``).
    public mutating func confirmForChange(now: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(council.confirmForChange(now: now), now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// This node cannot do the leader's work: it stops leading and does not campaign before `until`.
    public mutating func stepDown(now: Instant, until: Instant) -> [Directive] {
        var directives: [Directive] = []
        absorb(council.stepDown(now: now, until: until), now: now, into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// What this node says about itself changed: gossiped under a new incarnation.
    public mutating func announce(_ app: AppStatus, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        var app = app
        app.configuration = announcedConfiguration
        absorb(swim.setApp(app, now: now), into: &directives)
        publishIfChanged(into: &directives)
        return directives
    }

    /// Members that count majorities over other members than this node must not take part in its elections, nor
    /// it in theirs: while any member of its list announces — or last announced, dead or out of reach, this run or
    /// before a restart — another configuration, this node's lease is suspended (``Lease/suspend(_:now:)``): it
    /// neither campaigns nor grants. An operator editing the lists one node at a time gets no leader until they
    /// agree, rather than two (an old trio's 2 of 3 and a new trio's 3 of 5). A member never heard from is not
    /// compared (a new cluster); one that stays down with an old list holds elections up until it is back or
    /// removed from the lists (the status names it).
    /// `knownConfigurations` follows the members' state changes (``absorb(_:into:)``): only then is there
    /// anything to compare.
    /// Only file lists are compared: a member that announces an epoch took part in committed changes, and the
    /// change protocol keeps it from electing with anyone on another configuration.
    private mutating func compareConfigurations(now: Instant, into directives: inout [Directive]) {
        guard let configuration = announcedConfiguration, configurationsChanged else { return }
        configurationsChanged = false
        directives.append(.persistConfigurations(knownConfigurations))
        let others = knownConfigurations.filter { Self.listsDiffer($0.value, configuration) }
            .keys.sorted()
        guard others != mismatched else { return }
        mismatched = others
        membersChanged = true
        directives.append(.configurationMismatch(others))
        absorb(council.suspend(!others.isEmpty, now: now), now: now, into: &directives)
    }

    /// A change of the configuration was committed: membership follows it (new members probed, members that left
    /// forgotten), and so do roles and public addresses.
    private mutating func follow(_ committed: Configuration, now: Instant, into directives: inout [Directive]) {
        swim.setMembers(committed.members.map { ($0.id, $0.address) }, now: now)
        let listed = Set(committed.voters)
        knownConfigurations = knownConfigurations.filter { listed.contains($0.key) }
        configurationsChanged = true
        refreshCandidates()
        membersChanged = true
        directives.append(.configurationCommitted(committed))
        reannounce(now: now, into: &directives)
    }

    /// What this node announces of its configuration follows the configurations it holds; its own comparison with
    /// the others' is made again.
    private mutating func reannounce(now: Instant, into directives: inout [Directive]) {
        guard swim.me.app.configuration != announcedConfiguration else { return }
        var app = swim.me.app
        app.configuration = announcedConfiguration
        absorb(swim.setApp(app, now: now), into: &directives)
        configurationsChanged = true
        compareConfigurations(now: now, into: &directives)
    }

    /// The lease's candidates: the app nodes of the configurations held that membership sees alive.
    private mutating func refreshCandidates() {
        let appNodes = council.appNodes
        aliveCandidates = swim.view.filter { $0.state.status == .alive && appNodes.contains($0.state.id) }.map(\.state.id)
    }

    // MARK: - Directives

    private mutating func absorb(_ swimDirectives: [Swim.Directive], into directives: inout [Directive]) {
        for directive in swimDirectives {
            switch directive {
            case .send(let to, _, let envelope):
                directives.append(.send(.swim(envelope), to: to))
            case .changed(let state, let previous):
                membersChanged = true
                directives.append(.memberChanged(state, previous: previous))
                // A member's app (its configuration with it) changes only in a state change.
                if configuration != nil, state.id != me, let theirs = state.app.configuration, knownConfigurations[state.id] != theirs {
                    knownConfigurations[state.id] = theirs
                    configurationsChanged = true
                }
                if state.status != previous.status { refreshCandidates() }
            }
        }
    }

    private mutating func absorb(_ councilDirectives: [ConfiguredLease.Directive], now: Instant, into directives: inout [Directive]) {
        for directive in councilDirectives {
            switch directive {
            case .persistTerm(let term): directives.append(.persistTerm(term))
            case .persistConfiguration(let committed, let pending):
                directives.append(.persistConfiguration(committed: committed, pending: pending))
                // The published state shows the configurations.
                membersChanged = true
                reannounce(now: now, into: &directives)
            case .send(let to, .lease(let message, let committed)):
                directives.append(.send(.lease(message, committed: committed == Configuration.Position.initial.epoch ? nil : committed), to: to))
            case .send(let to, let message): directives.append(.send(.configuration(message), to: to))
            case .leadership(let term): directives.append(.leadership(term: term))
            case .committed(let configuration): follow(configuration, now: now, into: &directives)
            }
        }
    }

    private mutating func publishIfChanged(into directives: inout [Directive]) {
        guard membersChanged || published?.lease != lease.view else { return }
        var state: ClusterState
        if let published, !membersChanged {
            // Only the lease moved: no need to rebuild the members.
            state = published
            state.lease = lease.view
        } else {
            state = self.state
        }
        membersChanged = false
        guard state != published else { return }
        published = state
        directives.append(.publish(state))
    }
}
