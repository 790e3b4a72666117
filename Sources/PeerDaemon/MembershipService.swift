import Crypto
import Deployment
import Foundation
import Logging
import Leadership
import Membership
import Notify
import PeerFiles
import NIOCore
import NIOPosix
import PKI
import PeerCore
import ServiceLifecycle
import Transport
import X509

/// The I/O shell around the ``SWIM`` instance: it owns the instance, ticks it, and carries its directives.
///
/// - A mutual-TLS connection is kept open to every member (dialed, and accepted from it). The handshake
///   verifies the member's certificate; its key then keys the datagrams between the two. A connection that
///   closes, or a dial that is refused, is reported to the instance (`connectionLost`).
/// - Membership messages are ``SealedDatagram``s over UDP on the same address and port.
/// - Once a second the app on this node is checked and its health and image announced when they change.
public actor MembershipService: Service {
    public struct Counters: Sendable, Codable {
        public var datagramsSent = 0
        public var bytesSent = 0
        public var datagramsReceived = 0
        public var bytesReceived = 0
        /// Datagrams that were malformed, did not authenticate or came before the sender's key was known.
        public var datagramsDropped = 0
    }

    nonisolated let mesh: PeerConfig.Mesh
    nonisolated let me: MemberID
    nonisolated let tls: MeshTLS
    nonisolated let certificate: Certificate
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    nonisolated let appCheck: @Sendable () async -> AppStatus
    nonisolated let addresses: [MemberID: SocketAddress]
    nonisolated let publicAddress: String

    /// What goes in a sealed datagram.
    enum Datagram: Codable, Sendable {
        case swim(SWIM.Envelope)
        case lease(Lease.Message)
    }

    private var swim: SWIM
    /// nil when this node is not a voter.
    private var lease: Lease
    nonisolated let leaseFile: String
    nonisolated let canLead: Set<MemberID>
    nonisolated let onLeadership: @Sendable (UInt64?) async -> Void
    /// Where the leader's notices go (the dispatcher, which also checks the lease before sending).
    nonisolated let onNotice: @Sendable (Notice) async -> Void
    nonisolated let operatorHandler: (@Sendable (MeshConnection, String) async -> Void)?
    private var keys: [MemberID: SymmetricKey] = [:]
    /// The open outbound connection to each member: messages too big or too rare for datagrams go there.
    private var links: [MemberID: NIOAsyncChannelOutboundWriter<ByteBuffer>] = [:]
    /// Who handles a message a member sends on its connection (the origin certificate service).
    private var onMemberMessage: (@Sendable (String, ByteBuffer) async -> Void)?
    /// Members that can lead and that membership sees alive, kept up to date from its changes.
    private var aliveCandidates: [MemberID] = []
    private var outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>?
    private var counters = Counters()
    /// Wakes the tick loop when an event brings a deadline closer than the one it sleeps until.
    private let tickWakeup = Wakeup()
    private var tickSleepsUntil: Instant?
    /// Loops that act on the members' state or on the leadership (DNS, rollouts): woken when either changes.
    private var watchers: [Wakeup] = []
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    public init(
        config: PeerConfig, mesh: PeerConfig.Mesh, clock: any PeerClock = EventLoopClock(), logger: Logger,
        leaseSettings: LeaseSettings = .standard, onLeadership: @escaping @Sendable (UInt64?) async -> Void = { _ in },
        onNotice: @escaping @Sendable (Notice) async -> Void = { _ in },
        operatorHandler: (@Sendable (MeshConnection, String) async -> Void)? = nil,
        appCheck: @escaping @Sendable () async -> AppStatus
    ) throws {
        self.mesh = mesh
        self.onLeadership = onLeadership
        self.onNotice = onNotice
        self.operatorHandler = operatorHandler
        self.me = MemberID(config.node.name)
        self.logger = logger
        self.clock = clock
        self.appCheck = appCheck
        let read = { (path: String) throws -> String in
            guard let data = FileManager.default.contents(atPath: path) else { throw StartupError(description: "\(config.path): mesh: \(path) cannot be read") }
            return String(decoding: data, as: UTF8.self)
        }
        let names = Set(mesh.members.map(\.name))
        let certificatePEM = try read(mesh.certificate)
        do {
            // Members, and operators (peerctl from a laptop or CI with an operator certificate).
            tls = try MeshTLS(caPEM: try read(mesh.ca), certificatePEM: certificatePEM, keyPEM: try read(mesh.key)) { who in
                switch who {
                case .node(let name): names.contains(name)
                case .operator: operatorHandler != nil
                }
            }
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw StartupError(description: "\(config.path): mesh: \(error)")
        }
        guard PeerIdentity(certificate: certificate) == .node(config.node.name) else {
            throw StartupError(
                description: "\(config.path): mesh.cert \(mesh.certificate) is not a node certificate for \(config.node.name); issue one with: peerctl cert issue \(config.node.name) --address IP")
        }
        var addresses: [MemberID: SocketAddress] = [:]
        for member in mesh.members {
            addresses[MemberID(member.name)] = try SocketAddress(ipAddress: member.host, port: member.port)
        }
        self.addresses = addresses
        self.publicAddress = config.node.address
        let me = MemberID(config.node.name)
        var seed = SystemRandomNumberGenerator()
        swim = SWIM(
            me: me, address: mesh.members.first { $0.name == config.node.name }!.address, app: .none,
            incarnation: 1, seeds: mesh.members.map { (MemberID($0.name), $0.address) }, settings: mesh.membership,
            seed: seed.next(), now: clock.now())
        // The highest term this node promised survives restarts: terms only grow, so they can fence.
        try AtomicFile.makeDirectory(config.stateDirectory, mode: 0o700)
        leaseFile = config.stateDirectory + "/lease-term"
        let promised = (try? String(contentsOfFile: leaseFile, encoding: .utf8)).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        canLead = Set(mesh.members.filter { $0.role == .node }.map { MemberID($0.name) })
        lease = Lease(
            me: me, voters: mesh.members.map { MemberID($0.name) }, canLead: canLead.contains(me), promised: promised,
            settings: leaseSettings, seed: seed.next(), now: clock.now())
        aliveCandidates = canLead.sorted()
    }

    // MARK: - Views

    public struct Snapshot: Sendable {
        public var views: [SWIM.View]
        public var now: Instant
        public var counters: Counters
    }

    /// Since when this node's membership runs (the DNS service waits for the view to fill in).
    public nonisolated let startedAt = SystemClock().now()

    public func snapshot() -> Snapshot { Snapshot(views: swim.view, now: clock.now(), counters: counters) }

    /// The term under which this node leads, if it does with at least `atLeast` of its lease left: ask right
    /// before every DNS write and notification, and give the write no longer than `remaining` to complete.
    public func fence(atLeast: Duration = .zero) -> (term: UInt64, remaining: Duration)? {
        let now = clock.now()
        guard let term = lease.validTerm(now: now), let remaining = lease.remaining(now: now), remaining >= atLeast else { return nil }
        return (term, remaining)
    }

    public func who() -> ControlAPI.Who {
        let now = clock.now()
        let leader = lease.knownLeader(now: now)
        return ControlAPI.Who(
            node: me.name, leader: leader?.id.name, term: leader?.term, thisNodeLeads: lease.validTerm(now: now) != nil,
            leaseRemainingMs: lease.remaining(now: now).map { Int($0.milliseconds) }, voters: lease.voters.map(\.name),
            majority: lease.majority, promisedTerm: lease.promised)
    }

    /// Members as the DNS planner needs them: those that can serve (not witnesses), with their public address.
    public func servingView() -> [(name: String, address: String?, alive: Bool, healthy: Bool)] {
        swim.view.filter { canLead.contains($0.state.id) }.map {
            // A suspect still serves: only a death (which a live member cannot fail to refute) removes a record.
            ($0.state.id.name, $0.state.app.address, $0.state.status != .dead, $0.state.app.healthy == true)
        }
    }

    public struct RolloutMember: Sendable {
        public var name: String
        public var alive: Bool
        public var intent: RolloutIntent?
        public var report: RolloutReport?
    }

    /// Every app node's rollout state as gossiped (this node's from its own state).
    public func rolloutView() -> [RolloutMember] {
        swim.view.filter { canLead.contains($0.state.id) }.map {
            RolloutMember(name: $0.state.id.name, alive: $0.state.status != .dead, intent: $0.state.app.rollout, report: $0.state.app.rolloutReport)
        }
    }

    /// Wakes `wakeup` whenever a member's state (this node's included) or this node's leadership changes.
    func watchChanges(_ wakeup: Wakeup) { watchers.append(wakeup) }

    /// Hands messages that members send over their TLS connection to `handler` (with the sender's name).
    public func setMemberMessageHandler(_ handler: @escaping @Sendable (String, ByteBuffer) async -> Void) {
        onMemberMessage = handler
    }

    /// Sends one message to a member over this node's TLS connection to it; false when there is none open.
    public func sendMessage(_ message: ByteBuffer, to name: String) async -> Bool {
        guard let link = links[MemberID(name)] else { return false }
        do {
            try await link.write(message)
            return true
        } catch {
            logger.debug("member message not sent", metadata: ["mesh.member": "\(name)", "error": "\(error)"])
            return false
        }
    }

    /// Every app node's origin certificate mark as gossiped (this node's from its own state).
    public func originView() -> [(name: String, alive: Bool, mark: OriginMark?)] {
        swim.view.filter { canLead.contains($0.state.id) }.map { ($0.state.id.name, $0.state.status != .dead, $0.state.app.origin) }
    }

    /// Announces the origin certificate this node serves, at once.
    public func publishOrigin(_ mark: OriginMark?) async {
        var app = swim.me.app
        guard app.origin != mark else { return }
        app.origin = mark
        await carryOut(swim.setApp(app, now: clock.now()))
    }

    /// Announces this node's rollout state at once (not at the next app check).
    public func publishRollout(intent: RolloutIntent?, report: RolloutReport?) async {
        var app = swim.me.app
        guard app.rollout != intent || app.rolloutReport != report else { return }
        app.rollout = intent
        app.rolloutReport = report
        await carryOut(swim.setApp(app, now: clock.now()))
    }

    public func members() -> ControlAPI.Members {
        let now = clock.now()
        let views = swim.view
        let intent = views.compactMap(\.state.app.rollout).max { ($0.seq, $0.id) < ($1.seq, $1.id) }
        var reports: [String: RolloutReport] = [:]
        for view in views { if let r = view.state.app.rolloutReport { reports[view.state.id.name] = r } }
        let summary = intent.map { intent -> ControlAPI.Members.Rollout in
            let alive = Set(views.filter { $0.state.status != .dead }.map(\.state.id.name))
            let outcome = Rollout.outcome(intent: intent, reports: reports, alive: alive)
            var text = "running"
            var failure: String?
            switch outcome {
            case .running: text = "running"
            case .succeeded: text = "succeeded"
            case .failed(let node, let reason):
                text = "failed"
                failure = "\(node): \(reason)"
            }
            return ControlAPI.Members.Rollout(
                id: intent.id, kind: intent.kind.rawValue, image: intent.image, previousImage: intent.previousImage,
                requestedBy: intent.requestedBy, order: intent.order, outcome: text, failure: failure)
        }
        return ControlAPI.Members(
            node: me.name, profile: mesh.profile,
            members: views.map { view in
                ControlAPI.Members.Member(
                    name: view.state.id.name, address: view.state.address, status: "\(view.state.status)",
                    incarnation: view.state.incarnation, appHealthy: view.state.app.healthy, image: view.state.app.image,
                    isSelf: view.state.id == me, lastSeenMsAgo: view.lastSeen.map { Int((now - $0).milliseconds) },
                    rttMs: view.rtt.map { Double($0.nanoseconds) / 1e6 },
                    rolloutPhase: intent.flatMap { i in view.state.app.rolloutReport.flatMap { $0.intent == i.id ? $0.phase.rawValue : nil } },
                    originFingerprint: view.state.app.origin?.fingerprint)
            },
            datagramsSent: counters.datagramsSent, bytesSent: counters.bytesSent, datagramsReceived: counters.datagramsReceived,
            bytesReceived: counters.bytesReceived, datagramsDropped: counters.datagramsDropped, rollout: summary)
    }

    // MARK: - Running

    public func run() async throws {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            // NIO reads datagrams into 2 KiB buffers by default: a full-sync message is bigger, and a truncated
            // datagram does not authenticate.
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: SealedDatagram.maximumSize + 1))
            .bind(host: mesh.host, port: mesh.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        logger.info(
            "mesh listening",
            metadata: ["mesh.listen": "\(mesh.host):\(mesh.port)", "mesh.members": "\(mesh.members.count)", "mesh.profile": "\(mesh.profile)"])
        warnIfCertificateExpiresSoon()
        try await cancelWhenGracefulShutdown {
            try await channel.executeThenClose { inbound, outbound in
                await self.attach(outbound)
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await self.listen() }
                    for member in self.mesh.members where member.name != self.me.name {
                        group.addTask { await self.keepConnected(to: member) }
                    }
                    group.addTask { try await self.tickLoop() }
                    group.addTask { try await self.appLoop() }
                    for try await datagram in inbound {
                        await self.received(datagram)
                    }
                }
            }
        }
    }

    private func attach(_ writer: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>) { outbound = writer }

    /// Ticks the membership and lease instances at their deadlines and no more often: the loop sleeps until the
    /// earlier of the two, and an event that brings one closer wakes it (``deadlinesMayHaveMoved()``).
    private func tickLoop() async throws {
        while !Task.isCancelled {
            let now = clock.now()
            await carryOut(swim.tick(now: now))
            await carryOut(lease.tick(now: now, aliveCandidates: aliveCandidates))
            let after = clock.now()
            let next = nextDeadline(now: after)
            tickSleepsUntil = next
            await tickWakeup.wait(atMost: next - after, clock: clock)
            tickSleepsUntil = nil
        }
    }

    /// When the instances next have something to do (at the latest in a second).
    private func nextDeadline(now: Instant) -> Instant {
        min(swim.nextDeadline, lease.nextDeadline(now: now) ?? now + .seconds(1), now + .seconds(1))
    }

    /// After an event (a datagram, a lost connection): wakes the tick loop if the instances now have something
    /// to do before it planned to look.
    private func deadlinesMayHaveMoved() {
        guard let until = tickSleepsUntil, nextDeadline(now: clock.now()) < until else { return }
        tickSleepsUntil = nil
        tickWakeup.wake()
    }

    /// Checks the app every second; a change is announced at once, except that "unhealthy" needs three failed
    /// checks in a row (one slow answer is not an outage).
    private func appLoop() async throws {
        var failures = 0
        var rounds = 0
        while !Task.isCancelled {
            rounds += 1
            if rounds % 3600 == 0 { warnIfCertificateExpiresSoon() }
            var observed = await appCheck()
            observed.address = canLead.contains(me) ? publicAddress : nil
            observed.rollout = swim.me.app.rollout
            observed.rolloutReport = swim.me.app.rolloutReport
            observed.origin = swim.me.app.origin
            observed.certificateDaysLeft = ClusterCA.daysLeft(certificate)
            failures = observed.healthy == false ? failures + 1 : 0
            var next = observed
            if observed.healthy == false, failures < 3, swim.me.app.healthy == true, swim.me.app.image == observed.image {
                next.healthy = true  // not yet: one slow answer is not an outage
            }
            if next != swim.me.app {
                logger.info(
                    "app state changed",
                    metadata: ["app.healthy": "\(next.healthy.map { "\($0)" } ?? "-")", "app.image": "\(next.image ?? "-")"])
                await carryOut(swim.setApp(next, now: clock.now()))
            }
            try await clock.sleep(for: .seconds(1))
        }
    }

    // MARK: - TLS connections

    private func listen() async throws {
        try await Mesh.listen(host: mesh.host, port: mesh.port, tls: tls, logger: logger) { connection in
            if case .operator(let name) = connection.peer {
                await self.operatorHandler?(connection, name)
                return
            }
            let member = MemberID(connection.peer.name)
            await self.verified(member, certificate: connection.certificate)
            try? await connection.channel.executeThenClose { inbound, _ in
                for try await message in inbound {
                    await self.onMemberMessage?(member.name, message)
                }
            }
            if !Task.isCancelled { await self.lost(member, why: "its connection to us closed") }
        }
    }

    /// Keeps one outbound connection to `member`, redialing with backoff (100 ms up to 2 s).
    private func keepConnected(to member: PeerConfig.Mesh.Member) async {
        let id = MemberID(member.name)
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                let connection = try await Mesh.dial(host: member.host, port: member.port, tls: tls)
                guard connection.peer == .node(member.name) else {
                    try? await connection.channel.channel.close()
                    logger.error(
                        "mesh member answers with another identity",
                        metadata: ["mesh.member": "\(member.name)", "mesh.address": "\(member.address)", "mesh.identity": "\(connection.peer)"])
                    try? await clock.sleep(for: .seconds(5))
                    continue
                }
                verified(id, certificate: connection.certificate)
                backoff = .milliseconds(100)
                try? await connection.channel.executeThenClose { inbound, outbound in
                    self.links[id] = outbound
                    defer { self.links[id] = nil }
                    for try await _ in inbound {}
                }
                if Task.isCancelled { return }
                await lost(id, why: "our connection to it closed")
            } catch {
                if Task.isCancelled { return }
                if Self.isRefusal(error) {
                    await lost(id, why: "connection refused")
                } else {
                    logger.debug("mesh dial failed", metadata: ["mesh.member": "\(member.name)", "error": "\(error)"])
                }
            }
            try? await clock.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }

    private func verified(_ member: MemberID, certificate: Certificate) {
        guard keys[member] == nil else { return }
        do {
            keys[member] = try SealedDatagram.pairKey(tls: tls, myName: me.name, peerName: member.name, peer: certificate)
            logger.debug("mesh member verified", metadata: ["mesh.member": "\(member)"])
        } catch {
            logger.error("cannot derive the datagram key for a member", metadata: ["mesh.member": "\(member)", "error": "\(error)"])
        }
    }

    private func lost(_ member: MemberID, why: String) async {
        logger.debug("mesh connection lost", metadata: ["mesh.member": "\(member)", "reason": "\(why)"])
        await carryOut(swim.connectionLost(to: member, now: clock.now()))
        deadlinesMayHaveMoved()
    }

    static func isRefusal(_ error: any Error) -> Bool {
        if let io = error as? IOError { return io.errnoCode == ECONNREFUSED || io.errnoCode == ECONNRESET }
        if let connection = error as? NIOConnectionError {
            return connection.connectionErrors.contains { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
        }
        return "\(error)".contains("refused")
    }

    // MARK: - Datagrams

    private func received(_ datagram: AddressedEnvelope<ByteBuffer>) async {
        counters.datagramsReceived += 1
        counters.bytesReceived += datagram.data.readableBytes
        let message: Datagram
        let from: MemberID
        do {
            from = MemberID(try SealedDatagram.sender(of: datagram.data))
            guard let key = keys[from] else { throw SealedDatagram.Failure.unknownSender(from.name) }
            message = try decoder.decode(Datagram.self, from: try SealedDatagram.open(datagram.data, key: key))
        } catch {
            counters.datagramsDropped += 1
            logger.trace("datagram dropped", metadata: ["mesh.remote": "\(datagram.remoteAddress)", "reason": "\(error)"])
            return
        }
        switch message {
        case .swim(let envelope): await carryOut(swim.receive(envelope, from: from, now: clock.now()))
        case .lease(let m): await carryOut(lease.receive(m, from: from, now: clock.now()))
        }
        deadlinesMayHaveMoved()
    }

    private func carryOut(_ directives: [SWIM.Directive]) async {
        for directive in directives {
            switch directive {
            case .send(let to, _, let envelope):
                await send(.swim(envelope), to: to)
            case .changed(let state, let previous):
                log(state, previous: previous)
                for watcher in watchers { watcher.wake() }
                if state.status != previous.status {
                    aliveCandidates = swim.view.filter { $0.state.status == .alive && canLead.contains($0.state.id) }.map(\.state.id)
                }
                if lease.validTerm(now: clock.now()) != nil { await notices(for: state, previous: previous) }
            }
        }
    }

    private func carryOut(_ directives: [Lease.Directive]) async {
        for directive in directives {
            switch directive {
            case .persist(let term):
                do {
                    try AtomicFile.write(Array("\(term)\n".utf8), to: leaseFile, mode: 0o600)
                } catch {
                    // Not persisted, not promised: stop here rather than answer with a promise that a restart forgets.
                    logger.error("cannot persist the lease term; not answering", metadata: ["error": "\(error)"])
                    return
                }
            case .send(let to, let message):
                await send(.lease(message), to: to)
            case .leadership(let term):
                for watcher in watchers { watcher.wake() }
                if let term {
                    logger.info("this node leads", metadata: ["lease.term": "\(term)"])
                } else {
                    logger.info("this node no longer leads")
                }
                await onLeadership(term)
            }
        }
    }

    private func send(_ message: Datagram, to: MemberID) async {
        guard let key = keys[to], let address = addresses[to], let outbound else { return }
        do {
            let sealed = try SealedDatagram.seal(try encoder.encode(message), from: me.name, key: key)
            counters.datagramsSent += 1
            counters.bytesSent += sealed.readableBytes
            try await outbound.write(AddressedEnvelope(remoteAddress: address, data: sealed))
        } catch {
            logger.debug("datagram not sent", metadata: ["mesh.member": "\(to)", "error": "\(error)"])
        }
    }

    /// What the leader tells the operator about a member's change (deploys, certificates). A leader reports
    /// what changes while it leads; the DNS service reports removals and returns.
    private func notices(for state: MemberState, previous: MemberState) async {
        let who = state.id.name
        for deploy in [state.app.lastDeploy, state.app.runningDeploy].compactMap({ $0 })
        where deploy != previous.app.lastDeploy && deploy != previous.app.runningDeploy {
            let what = deploy.kind == "rollback" ? "rollback to \(deploy.image)" : "deploy of \(deploy.image)"
            let key = "deploy/\(who)/\(deploy.id)/\(deploy.state)"
            switch deploy.state {
            case "running":
                await onNotice(Notice(kind: .deployStarted, title: "\(who): \(what) started", body: "deploy \(deploy.id)", key: key))
            case "succeeded":
                await onNotice(Notice(
                    kind: deploy.kind == "rollback" ? .deployRolledBack : .deployFinished, title: "\(who): \(what) done",
                    body: "deploy \(deploy.id) serves \(deploy.image)", key: key))
            default:
                await onNotice(Notice(
                    kind: .deployFailed, title: "\(who): \(what) \(deploy.state)",
                    body: "deploy \(deploy.id): \(deploy.reason ?? "no reason given"); the previous version keeps serving", key: key))
            }
        }
        if let days = state.app.certificateDaysLeft, days <= 30 {
            // Once when it crosses 30, 7 and 1 days left.
            let bucket = days <= 1 ? 1 : days <= 7 ? 7 : 30
            let before = previous.app.certificateDaysLeft.map { $0 <= 1 ? 1 : $0 <= 7 ? 7 : $0 <= 30 ? 30 : 31 } ?? 31
            if bucket < before || previous.app.certificateDaysLeft == nil {
                await onNotice(Notice(
                    kind: .certificateExpiring, title: "\(who): mesh certificate expires in \(days) days",
                    body: "Renew it: peerctl cert issue \(who) --address IP --force, copy it to \(who), restart peerd.",
                    key: "cert/\(who)/\(bucket)"))
            }
        }
    }

    private func log(_ state: MemberState, previous: MemberState) {
        var metadata: Logger.Metadata = [
            "member.name": "\(state.id)", "member.status": "\(state.status)", "member.previous": "\(previous.status)",
            "member.incarnation": "\(state.incarnation)",
        ]
        if let healthy = state.app.healthy { metadata["member.app_healthy"] = "\(healthy)" }
        if let image = state.app.image { metadata["member.image"] = "\(image)" }
        if state.id == me {
            logger.debug("this node's state changed", metadata: metadata)
        } else if state.status != previous.status {
            logger.info("member \(state.status)", metadata: metadata)
        } else {
            logger.info("member app changed", metadata: metadata)
        }
    }

    private func warnIfCertificateExpiresSoon() {
        let days = ClusterCA.daysLeft(certificate)
        guard days <= 30 else { return }
        logger.warning(
            "this node's mesh certificate expires soon: renew it with peerctl cert issue",
            metadata: ["cert.days_left": "\(days)", "cert.file": "\(mesh.certificate)"])
    }
}
