import PeerCore

/// SWIM failure detection and gossip (Das, Gupta, Motivala 2002) with Lifeguard's refinements (Dadgar et al.
/// 2018: suspicion that shortens with independent confirmations, the "buddy" rule that tells a suspected member
/// at once) as a pure state machine: no I/O, time comes in as `now`, randomness from a seeded generator.
///
/// The shell calls ``tick(now:)`` often (every 20 ms or so), ``receive(_:from:now:)`` for every message from an
/// authenticated member, and ``connectionLost(to:now:)`` when the transport sees a member's connection close or
/// refused; it carries out the ``Directive``s they return.
///
/// Every message carries the sender's own state (so a refutation or an app change travels on every message it
/// sends) and piggybacks recent updates; every ``SWIMSettings/fullSyncEvery``-th ping carries the whole view.
public struct SWIM<App: SWIMPayload>: Sendable {
    public let settings: SWIMSettings
    public private(set) var me: MemberState<App>
    private var members: [MemberID: MemberState<App>] = [:]
    private var lastSeen: [MemberID: Instant] = [:]
    private var rtt: [MemberID: Duration] = [:]
    private var rng: SplitMix64
    private var seq: UInt64 = 0
    private let startedAt: Instant

    private struct Probe: Sendable {
        var target: MemberID
        var started: Instant
        /// When the ping (and, after the first round, the ping requests) were last sent: datagrams get lost, so
        /// a probe resends every ``SWIMSettings/directTimeout`` until an ack or its deadline.
        var lastSent: Instant
        var rounds: Int
        /// Started because the member's connection closed or was refused.
        var urgent = false
    }
    private var probes: [UInt64: Probe] = [:]
    private var probeOrder: [MemberID] = []
    private var nextProbeAt: Instant
    private var probesStarted = 0

    /// Pings sent on another member's behalf: our seq → who asked, with their seq.
    private struct Relay: Sendable {
        var requester: MemberID
        var seq: UInt64
        var target: MemberID
        var until: Instant
    }
    private var relays: [UInt64: Relay] = [:]

    private struct Suspicion: Sendable {
        var started: Instant
        /// Distinct members known to suspect it at this incarnation (this node included when it does).
        var suspectors: Set<MemberID>
        /// This node saw the member's connection refused and could not reach it through others either.
        var refused = false
    }
    private var suspicions: [MemberID: Suspicion] = [:]

    /// Members whose current state still has to be piggybacked, with how many more times.
    private var pending: [MemberID: Int] = [:]

    /// `seeds` are the configured members (this node may be among them; it is skipped), assumed alive at
    /// incarnation 0 until they speak for themselves (at 1 or more). `incarnation` is where this node starts: a
    /// restarted node that was declared dead raises it past what the others hold as soon as it hears of it.
    public init(
        me: MemberID, address: String, app: App = .none, incarnation: UInt64 = 1, seeds: [(MemberID, String)],
        settings: SWIMSettings, seed: UInt64, now: Instant
    ) {
        self.settings = settings
        self.me = MemberState<App>(id: me, address: address, incarnation: incarnation, app: app)
        self.rng = SplitMix64(seed: seed)
        self.startedAt = now
        for (id, address) in seeds where id != me {
            members[id] = MemberState<App>(id: id, address: address)
        }
        // Start probing at a random point of the first interval so restarted peers do not probe in lockstep.
        nextProbeAt = now + .nanoseconds(Int64.random(in: 0..<max(1, settings.probeInterval.nanoseconds), using: &rng))
        pending[me] = retransmits
    }

    // MARK: - Views

    /// Every member this node knows, itself included, by name.
    public var view: [View] {
        var out = [View(state: me, lastSeen: nil, rtt: nil)]
        for (id, state) in members { out.append(View(state: state, lastSeen: lastSeen[id], rtt: rtt[id])) }
        return out.sorted { $0.state.id < $1.state.id }
    }

    /// When each member was last heard from directly, and its latest round-trip time.
    public var measurements: (lastSeen: [MemberID: Instant], rtt: [MemberID: Duration]) { (lastSeen, rtt) }

    public func state(of id: MemberID) -> MemberState<App>? { id == me.id ? me : members[id] }

    /// The earliest instant at which ``tick(now:)`` has something to do: the next probe, a probe's resend or
    /// timeout, a relay's expiry or a suspicion's end. Before it a tick changes nothing, so a shell can sleep
    /// until then — and must look again after every event, which can bring it closer. After `tick(now:)` it is
    /// later than `now`.
    public var nextDeadline: Instant {
        var next = nextProbeAt
        for probe in probes.values {
            next = min(next, probe.started + (probe.urgent ? settings.refusedProbeTimeout : settings.probeTimeout))
            if members[probe.target]?.status != .dead { next = min(next, probe.lastSent + settings.directTimeout) }
        }
        for relay in relays.values { next = min(next, relay.until) }
        for suspicion in suspicions.values { next = min(next, suspicion.started + suspicionTimeout(suspicion)) }
        return next
    }

    // MARK: - Events

    /// The configured members changed (a change of the cluster's configuration committed): a new member is taken as
    /// alive at incarnation 0 until it speaks for itself, as at start; one that left is forgotten, with what was
    /// under way about it (probes, suspicions, relays). Addresses follow the configuration.
    public mutating func setMembers(_ seeds: [(MemberID, String)], now: Instant) {
        let configured = Dictionary(seeds.filter { $0.0 != me.id }, uniquingKeysWith: { first, _ in first })
        for id in members.keys where configured[id] == nil {
            members[id] = nil
            lastSeen[id] = nil
            rtt[id] = nil
            suspicions[id] = nil
            pending[id] = nil
        }
        probes = probes.filter { configured[$0.value.target] != nil }
        relays = relays.filter { configured[$0.value.target] != nil && configured[$0.value.requester] != nil }
        probeOrder.removeAll { configured[$0] == nil }
        for (id, address) in configured {
            if members[id] == nil {
                members[id] = MemberState<App>(id: id, address: address)
                pending[me.id] = retransmits
            } else {
                members[id]?.address = address
            }
        }
    }

    /// The app on this node changed (health or image): announced under a new incarnation.
    public mutating func setApp(_ app: App, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        let app = app.bounded()
        guard app != me.app else { return directives }
        let previous = me
        me.app = app
        me.incarnation += 1
        pending[me.id] = retransmits
        directives.append(.changed(me, previous: previous))
        return directives
    }

    public mutating func tick(now: Instant) -> [Directive] {
        var directives: [Directive] = []

        if now >= nextProbeAt, let target = nextTarget() {
            nextProbeAt = now + settings.probeInterval
            let s = nextSeq()
            probes[s] = Probe(target: target, started: now, lastSent: now, rounds: 1)
            probesStarted += 1
            let full = settings.fullSyncEvery > 0 && probesStarted % settings.fullSyncEvery == 0
            directives.append(send(.ping(seq: s), to: target, fullSync: full))
        } else if now >= nextProbeAt {
            nextProbeAt = now + settings.probeInterval
        }

        for (s, probe) in probes.sorted(by: { $0.key < $1.key }) {
            if now >= probe.started + (probe.urgent ? settings.refusedProbeTimeout : settings.probeTimeout) {
                probes[s] = nil
                suspect(probe.target, refused: probe.urgent, now: now, into: &directives)
            } else if now >= probe.lastSent + settings.directTimeout, members[probe.target]?.status != .dead {
                // (A member already dead gets one ping per probe: enough to notice it is back, and cheap.)
                probes[s]?.lastSent = now
                probes[s]?.rounds += 1
                directives.append(send(.ping(seq: s), to: probe.target))
                for helper in helpers(for: probe.target) {
                    directives.append(send(.pingRequest(seq: s, target: probe.target), to: helper))
                }
            }
        }

        relays = relays.filter { $0.value.until > now }

        for (id, suspicion) in suspicions.sorted(by: { $0.key < $1.key }) where now >= suspicion.started + suspicionTimeout(suspicion) {
            guard var state = members[id], state.status == .suspect else {
                suspicions[id] = nil
                continue
            }
            let previous = state
            state.status = .dead
            state.suspectedBy = nil
            members[id] = state
            suspicions[id] = nil
            pending[id] = retransmits
            directives.append(.changed(state, previous: previous))
        }
        return directives
    }

    /// The transport saw the connection to `member` close, or a dial refused: a process that is gone closes its
    /// sockets, lost packets never do. The member is probed at once through others (a link cut with a reject
    /// rule must not look like a death); if nobody reaches it within ``SWIMSettings/refusedProbeTimeout`` it is
    /// suspected for the short ``SWIMSettings/refusedSuspicion``. It can still refute.
    public mutating func connectionLost(to member: MemberID, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard let state = members[member], state.status != .dead,
            !probes.values.contains(where: { $0.target == member && $0.urgent }), suspicions[member]?.refused != true
        else { return directives }
        let s = nextSeq()
        probes[s] = Probe(target: member, started: now, lastSent: now, rounds: 2, urgent: true)
        directives.append(send(.ping(seq: s), to: member))
        for helper in helpers(for: member) {
            directives.append(send(.pingRequest(seq: s, target: member), to: helper))
        }
        return directives
    }

    /// A message from `from`, whose identity the transport authenticated. Messages whose sender state names
    /// someone else, or that come from a non-member, are ignored.
    public mutating func receive(_ envelope: Envelope, from: MemberID, now: Instant) -> [Directive] {
        var directives: [Directive] = []
        guard from != me.id, members[from] != nil, envelope.sender.id == from, envelope.sender.status == .alive,
            Counter.isPlausible(envelope.sender.incarnation)
        else {
            return directives
        }
        lastSeen[from] = now
        merge(envelope.sender, now: now, into: &directives)
        // An incarnation past the bound is a broken or hostile member's: taking it would make the refutation's
        // `+ 1` trap.
        for update in envelope.gossip.prefix(max(settings.maxGossip, members.count + 1) + 1) where Counter.isPlausible(update.incarnation) {
            merge(update, now: now, into: &directives)
        }

        switch envelope.message {
        case .ping(let s):
            directives.append(send(.ack(seq: s, target: me.id), to: from))

        case .pingRequest(let s, let target):
            guard target != me.id, target != from, members[target] != nil else { break }
            let mine = nextSeq()
            relays[mine] = Relay(requester: from, seq: s, target: target, until: now + settings.probeTimeout)
            directives.append(send(.ping(seq: mine), to: target))

        case .ack(let s, let target):
            if let probe = probes[s], probe.target == target, from == target || probe.rounds > 1 {
                probes[s] = nil
                if from == target { rtt[target] = now - probe.started }
            } else if let relay = relays[s], relay.target == from, target == from {
                relays[s] = nil
                directives.append(send(.ack(seq: relay.seq, target: target), to: relay.requester))
            }
        }
        return directives
    }

    // MARK: - Internals

    private var retransmits: Int {
        var bits = 0
        var n = members.count + 2  // members + this node + 1
        while n > 1 {
            n = (n + 1) / 2
            bits += 1
        }
        return max(1, settings.retransmitMultiplier * bits)
    }

    private mutating func nextSeq() -> UInt64 {
        seq &+= 1
        return seq
    }

    /// Round-robin over a shuffled list of every other member, dead ones included (so one that comes back is
    /// found even if it cannot reach us), reshuffled each round.
    private mutating func nextTarget() -> MemberID? {
        if probeOrder.isEmpty {
            probeOrder = members.keys.sorted()
            probeOrder.shuffle(using: &rng)
        }
        return probeOrder.popLast()
    }

    private mutating func helpers(for target: MemberID) -> [MemberID] {
        var candidates = members.values.filter { $0.status == .alive && $0.id != target }.map(\.id).sorted()
        candidates.shuffle(using: &rng)
        return Array(candidates.prefix(settings.indirectProbes))
    }

    private func suspicionTimeout(_ suspicion: Suspicion) -> Duration {
        if suspicion.refused { return settings.refusedSuspicion }
        let expected = min(settings.indirectProbes, members.count - 1)  // members.count excludes this node: N − 2
        guard expected > 0 else { return settings.suspicionMax }
        let confirmations = min(max(0, suspicion.suspectors.count - 1), expected)
        let span = settings.suspicionMax.nanoseconds - settings.suspicionMin.nanoseconds
        return .nanoseconds(settings.suspicionMax.nanoseconds - span * Int64(confirmations) / Int64(expected))
    }

    /// This node suspects `id` itself (failed probe; `refused`: after its connection was refused).
    private mutating func suspect(_ id: MemberID, refused: Bool, now: Instant, into directives: inout [Directive]) {
        guard var state = members[id] else { return }
        // Just started, and never heard from it: more likely our own connections are still being set up (a
        // restarted node in a big cluster has dozens of handshakes to make) than it being gone. Others judge it.
        if now < startedAt + settings.startupGrace, lastSeen[id] == nil, state.status == .alive { return }
        switch state.status {
        case .alive:
            let previous = state
            state.status = .suspect
            state.suspectedBy = me.id
            members[id] = state
            suspicions[id] = Suspicion(started: now, suspectors: [me.id], refused: refused)
            pending[id] = retransmits
            directives.append(.changed(state, previous: previous))
        case .suspect:
            // An independent confirmation from this node: counted, and told to the others under our name.
            if refused, suspicions[id] != nil, suspicions[id]?.refused == false {
                // The timer restarts: the short timeout counts from the evidence, not from older gossip.
                suspicions[id]?.refused = true
                suspicions[id]?.started = now
            }
            if suspicions[id]?.suspectors.insert(me.id).inserted == true {
                state.suspectedBy = me.id
                members[id] = state
                pending[id] = retransmits
            }
        case .dead:
            break
        }
    }

    private mutating func merge(_ update: MemberState<App>, now: Instant, into directives: inout [Directive]) {
        var update = update
        update.app = update.app.bounded()
        if update.id == me.id {
            // Someone holds a state of ours at least as new as ours that is not "alive" (a suspicion, or a
            // death from before a restart), or a newer incarnation from a previous life: refute.
            // Or it holds our current incarnation with another app state (a restart that reused the number).
            let stale = update.incarnation == me.incarnation && update.status == .alive && update.app.differs(from: me.app)
            if update.incarnation > me.incarnation || (update.status != .alive && update.incarnation >= me.incarnation) || stale {
                let previous = me
                me.incarnation = update.incarnation + 1
                pending[me.id] = retransmits
                directives.append(.changed(me, previous: previous))
            }
            return
        }
        guard let current = members[update.id] else { return }  // not a configured member: ignored

        if update.supersedes(current) {
            var next = update
            next.address = current.address  // addresses come from the config, not from gossip
            // A relay that does not carry signatures (a peerd before them) keeps the one this node holds.
            if next.proof == nil, next.incarnation == current.incarnation { next.proof = current.proof }
            if next.status != .suspect { next.suspectedBy = nil }
            members[update.id] = next
            switch next.status {
            case .suspect:
                suspicions[update.id] = Suspicion(started: now, suspectors: update.suspectedBy.map { [$0] } ?? [])
            case .alive, .dead:
                suspicions[update.id] = nil
            }
            pending[update.id] = retransmits
            if next.status != current.status || next.app != current.app {
                directives.append(.changed(next, previous: current))
            }
        } else if update.status == .suspect, current.status == .suspect, update.incarnation == current.incarnation,
            let by = update.suspectedBy
        {
            suspicions[update.id]?.suspectors.insert(by)
        }
    }

    /// A message to `to`, with the gossip it should carry.
    private mutating func send(_ message: Message, to: MemberID, fullSync: Bool = false) -> Directive {
        var gossip: [MemberState<App>] = []
        var included: Set<MemberID> = []
        // Buddy rule: a member we do not believe alive hears about it on every message we send it, so it can
        // refute at once.
        if let target = members[to], target.status != .alive {
            gossip.append(target)
            included.insert(to)
        }
        if fullSync {
            for state in [me] + members.values.sorted(by: { $0.id < $1.id }) where !included.contains(state.id) {
                gossip.append(state)
                included.insert(state.id)
            }
        } else {
            // The least-sent updates first.
            let order = pending.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            for (id, _) in order where gossip.count < settings.maxGossip && !included.contains(id) {
                guard let state = id == me.id ? me : members[id] else { continue }
                gossip.append(state)
                included.insert(id)
            }
        }
        for id in included {
            guard let left = pending[id] else { continue }
            pending[id] = left > 1 ? left - 1 : nil
        }
        let address = members[to]?.address ?? ""
        return .send(to: to, address: address, Envelope(sender: me, message: message, gossip: gossip))
    }
}
