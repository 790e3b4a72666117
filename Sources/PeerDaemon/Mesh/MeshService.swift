import PeerConfiguration
import CPeerProcess
import Cluster
import Crypto
import Foundation
import Leadership
import Logging
import Membership
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PKI
import PeerCore
import ServiceLifecycle
import Transport
import X509

/// The I/O shell around the pure ``MeshNode``: sockets, TLS connections, datagram keys. It ticks the node at its
/// deadlines, feeds it what arrives, and carries out its directives; it publishes the ``ClusterState`` and reads
/// what this node's services announce. Nothing calls into it.
///
/// - A mutual-TLS connection is kept open to every member (dialed, and accepted from it). The handshake
///   verifies the member's certificate; its key then keys the datagrams between the two. A connection that
///   closes, or a dial that is refused, is reported to the node (`connectionLost`).
/// - Membership and lease messages are ``SealedDatagram``s over UDP on the same address and port, numbered per
///   process session (``DatagramPeers``): every connection starts, both ways, with a hello naming the session, so
///   a recorded datagram sent again is refused. A member that presents another certificate (rotated) gets a new
///   key at once.
/// - Revocations (``RevocationService`` publishes them): a revoked certificate fails its handshake, connections
///   already open with it are cut, and its datagram key is dropped.
actor MeshService: Service {
    nonisolated let mesh: PeerConfig.Mesh
    nonisolated let me: MemberID
    nonisolated let tls: MeshTLS
    nonisolated let certificate: Certificate
    nonisolated let logger: Logger
    nonisolated let clock: any PeerClock
    /// The members' datagram addresses, as the committed configuration gives them.
    var addresses: [MemberID: SocketAddress] = [:]
    /// The node names the mesh's TLS admits: the committed configuration's members.
    nonisolated let admitted: NIOLockedValueBox<Set<String>>
    /// Wakes the dialer when the committed configuration changes.
    let membersChanged = Wakeup()
    /// The configuration could not be persisted once: this node sends no lease or configuration message any more.
    var configurationUnwritable = false
    /// This node's public address (its DNS record), nil on a witness.
    nonisolated let publicAddress: String?
    nonisolated let state: StateDirectory
    nonisolated let cluster: Published<ClusterState>
    nonisolated let announcements: Published<Announcement>
    nonisolated let leaseRequests: Published<LeaseRequests>
    nonisolated let links: MemberLinks
    nonisolated let stats: MeshStats
    nonisolated let operatorHandler: (@Sendable (MeshConnection, String) async -> Void)?
    nonisolated let revocations: Published<RevocationList>
    /// What the mesh's TLS enforces of them (the same guard as `tls.revocations`).
    nonisolated let revocationGuard: RevocationGuard

    var node: MeshNode
    var datagrams: DatagramPeers
    /// Signs what this node says about itself, once per incarnation (``PKI/MemberProof``).
    var proofs: MemberProof
    /// The certificate each member presented in its last verified handshake (its datagram key's).
    var certificates: [MemberID: Certificate] = [:]
    /// What mesh-peers.json holds.
    var remembered: MeshPeers
    var outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>?
    /// Wakes the tick loop when an event brings a deadline closer than the one it sleeps until.
    let tickWakeup = Wakeup()
    var tickSleepsUntil: Instant?
    let encoder = JSONEncoder()
    let decoder = JSONDecoder()

    init(
        config: PeerConfig, mesh: PeerConfig.Mesh, clock: any PeerClock, cluster: Published<ClusterState>,
        revocations: Published<RevocationList>,
        announcements: Published<Announcement>, leaseRequests: Published<LeaseRequests>, links: MemberLinks, stats: MeshStats, logger: Logger,
        operatorHandler: (@Sendable (MeshConnection, String) async -> Void)? = nil
    ) throws {
        self.mesh = mesh
        self.me = MemberID(config.node.name)
        self.clock = clock
        self.logger = logger
        self.cluster = cluster
        self.announcements = announcements
        self.leaseRequests = leaseRequests
        self.links = links
        self.stats = stats
        self.operatorHandler = operatorHandler
        self.revocations = revocations
        let revocationGuard = RevocationGuard(revocations.current)
        self.revocationGuard = revocationGuard
        self.state = StateDirectory(config.stateDirectory)
        let read = { (path: String) throws -> String in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw StartupError(description: "\(config.path): mesh: \(path) cannot be read")
            }
            return String(decoding: data, as: UTF8.self)
        }
        // The cluster's configuration as this node last persisted it; the file's member list until it took part in a
        // change.
        let stored: StoredConfiguration?
        do {
            stored = try state.read(.configuration)
        } catch {
            throw StartupError(description: "\(error)")
        }
        let fileMembers = mesh.members.map {
            MeshNode.Member(id: MemberID($0.name), address: $0.address, appNode: $0.role == .node, publicAddress: $0.publicAddress)
        }
        let committed = stored?.committed ?? .initial(fileMembers)
        let members = Self.members(committed, pending: stored?.pending)
        let admitted = NIOLockedValueBox(Set(members.map(\.id.name)))
        self.admitted = admitted
        let certificatePEM = try read(mesh.certificate)
        let keyPEM = try read(mesh.key)
        do {
            // Members, and operators (peerctl from a laptop or CI with an operator certificate).
            tls = try MeshTLS(
                caPEM: try read(mesh.ca), certificatePEM: certificatePEM, keyPEM: keyPEM,
                revocations: revocationGuard
            ) { who in
                switch who {
                case .node(let name): admitted.withLockedValue { $0.contains(name) }
                case .operator: operatorHandler != nil
                }
            }
            certificate = try Certificate(pemEncoded: certificatePEM)
            proofs = try MemberProof(keyPEM: keyPEM)
        } catch {
            throw StartupError(description: "\(config.path): mesh: \(error)")
        }
        guard PeerIdentity(certificate: certificate) == .node(config.node.name) else {
            throw StartupError(
                description:
                    "\(config.path): mesh.cert \(mesh.certificate) is not a node certificate for \(config.node.name); issue one with: peerctl cert issue \(config.node.name) --address IP"
            )
        }
        self.addresses = Self.socketAddresses(members)
        let me = self.me
        self.publicAddress = (committed.member(me) ?? fileMembers.first { $0.id == me })?.appNode == true ? config.node.address : nil
        // The highest term this node promised survives restarts: terms only grow, so they can fence.
        let promised: UInt64
        do {
            promised = try state.promisedTerm()
        } catch {
            throw StartupError(description: "\(error)")
        }
        let remembered: MeshPeers
        do {
            remembered = try state.read(.meshPeers) ?? MeshPeers(numbering: [])
        } catch {
            throw StartupError(description: "\(error)")
        }
        self.remembered = remembered
        var seed = SystemRandomNumberGenerator()
        let node = MeshNode(
            me: me, members: fileMembers, stored: stored.map { ($0.committed, $0.pending) }, swim: mesh.membership, lease: .profile(mesh.profile),
            promised: promised, seed: seed.next(),
            now: clock.now(), configuration: Self.configurationDigest(mesh.members),
            knownConfigurations: Dictionary(uniqueKeysWithValues: (remembered.configurations ?? [:]).map { (MemberID($0.key), $0.value) }))
        self.node = node
        datagrams = DatagramPeers(me: me.name, session: seed.next(), numbering: Set(remembered.numbering))
        cluster.publish(node.state)
        if let stored, stored.committed.members != fileMembers {
            logger.info(
                "mesh.members in this node's file is not the cluster's configuration any more: the cluster's is used (peerctl members)",
                metadata: ["configuration.epoch": "\(stored.committed.epoch)"])
        }
    }

    /// Every member's datagram address (a member whose address is not one is left out: the configuration was
    /// checked when it was proposed).
    static func socketAddresses(_ members: [Configuration.Member]) -> [MemberID: SocketAddress] {
        var addresses: [MemberID: SocketAddress] = [:]
        for member in members {
            guard let (host, port) = PeerConfig.hostPort(member.address), let address = try? SocketAddress(ipAddress: host, port: port) else {
                continue
            }
            addresses[member.id] = address
        }
        return addresses
    }

    // MARK: - Running

    func run() async throws {
        if !node.mismatched.isEmpty {
            logger.warning(
                "members ran another cluster configuration when last heard (mesh.members differs): no leader until every member lists the same members",
                metadata: ["mesh.members_differing": "\(node.mismatched.map(\.name).joined(separator: ","))"])
        }
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
            metadata: [
                "mesh.listen": "\(mesh.host):\(mesh.port)", "mesh.members": "\(addresses.count)", "mesh.profile": "\(mesh.profile)",
                "configuration.epoch": "\(node.council.committed.epoch)",
            ])
        try await cancelWhenGracefulShutdown {
            try await channel.executeThenClose { inbound, outbound in
                await self.attach(outbound)
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await self.listen() }
                    group.addTask { await self.dialMembers() }
                    group.addTask { try await self.tickLoop() }
                    group.addTask { try await self.announceLoop() }
                    group.addTask { await self.leaseRequestLoop() }
                    group.addTask { await self.revocationLoop() }
                    for try await datagram in inbound {
                        await self.received(datagram)
                    }
                }
            }
        }
    }

    private func attach(_ writer: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>) { outbound = writer }

    /// Ticks the node at its deadlines and no more often: the loop sleeps until the next one, and an event that
    /// brings it closer wakes it (``deadlinesMayHaveMoved()``).
    private func tickLoop() async throws {
        while !Task.isCancelled {
            await carryOut(node.tick(now: clock.now()))
            let after = clock.now()
            let next = node.nextDeadline(now: after)
            tickSleepsUntil = next
            await tickWakeup.wait(atMost: next - after, clock: clock)
            tickSleepsUntil = nil
        }
    }

    /// After an event (a datagram, a lost connection): wakes the tick loop if the node now has something to do
    /// before it planned to look.
    func deadlinesMayHaveMoved() {
        guard let until = tickSleepsUntil, node.nextDeadline(now: clock.now()) < until else { return }
        tickSleepsUntil = nil
        tickWakeup.wake()
    }

    /// Gossips what this node's services announce, with its address and certificate days, whenever they change
    /// (and hourly, as the certificate's days run down).
    private func announceLoop() async throws {
        let wakeup = Wakeup()
        announcements.watch(wakeup)
        var nextHourly = clock.now()
        while !Task.isCancelled {
            let now = clock.now()
            if now >= nextHourly {
                warnIfCertificateExpiresSoon()
                nextHourly = now + .seconds(3600)
            }
            let status = announcements.current.status(address: publicAddress, certificateDaysLeft: ClusterCA.daysLeft(certificate))
            await carryOut(node.announce(status, now: now))
            deadlinesMayHaveMoved()
            await wakeup.wait(atMost: nextHourly - clock.now(), clock: clock)
        }
    }

    /// Carries out what this node's services ask of its lease: a confirmation round before a fenced write, a
    /// step-down when this node cannot do the leader's work.
    private func leaseRequestLoop() async {
        let wakeup = Wakeup()
        leaseRequests.watch(wakeup)
        var seen = leaseRequests.current
        while !Task.isCancelled {
            await wakeup.wait(atMost: .seconds(3600), clock: clock)
            let asked = leaseRequests.current
            if let stepDown = asked.stepDown, stepDown.id != seen.stepDown?.id {
                logger.warning("this node steps down", metadata: ["reason": "\(stepDown.reason)"])
                await carryOut(node.stepDown(now: clock.now(), until: stepDown.until))
            }
            if asked.confirmations != seen.confirmations { await carryOut(node.confirmLease(now: clock.now())) }
            if let proposal = asked.proposal, proposal.id != seen.proposal?.id {
                var refusal: ConfiguredLease.Refusal?
                do {
                    await carryOut(try node.propose(proposal.members, now: clock.now()))
                    logger.info(
                        "proposing a change of the cluster's configuration",
                        metadata: ["configuration.members": "\(proposal.members.map(\.id.name).joined(separator: ","))"])
                } catch {
                    refusal = error
                    if error == .notConfirmed { await carryOut(node.confirmForChange(now: clock.now())) }
                }
                leaseRequests.update { $0.answer = .init(id: proposal.id, refusal: refusal) }
            }
            // What was asked while the above awaited is carried out on the next round (the wakeup fired for it).
            seen = asked
            deadlinesMayHaveMoved()
        }
    }

    // MARK: - TLS connections

    private func listen() async throws {
        // After a flood of connections (strangers on an open port), the heap's free pages go back at once.
        let allowed = mesh
        var limits = Mesh.Limits(afterBurst: { _ = peer_release_free_heap() })
        if mesh.allowFrom != nil {
            limits.admits = { @Sendable (source: String) -> Bool in allowed.admits(source) }
        }
        try await Mesh.listen(host: mesh.host, port: mesh.port, tls: tls, limits: limits, logger: logger) { connection in
            if case .operator(let name) = connection.peer {
                await self.operatorHandler?(connection, name)
                return
            }
            let member = MemberID(connection.peer.name)
            await self.verified(member, certificate: connection.certificate)
            try? await connection.channel.executeThenClose { inbound, outbound in
                try await self.sayHello(to: member, on: outbound)
                for try await message in inbound where await !self.tookHello(message, from: member) {
                    self.links.received(message, from: member)
                }
            }
            if !Task.isCancelled { await self.lost(member, why: "its connection to us closed") }
        }
    }

    /// The member `id` as the configurations this node holds give it (nil: no member of them).
    func configured(_ id: MemberID) -> Configuration.Member? {
        node.council.committed.member(id) ?? node.council.pending?.member(id)
    }

    /// Keeps a connection to every member of the configurations this node holds: one dialer per member, started
    /// when a change adds it (a dialer stops when a change removes its member).
    private func dialMembers() async {
        await withDiscardingTaskGroup { group in
            var dialing: Set<MemberID> = []
            while !Task.isCancelled {
                for member in Self.members(node.council.committed, pending: node.council.pending)
                where member.id != me && !dialing.contains(member.id) {
                    dialing.insert(member.id)
                    group.addTask { await self.keepConnected(to: member.id) }
                }
                await membersChanged.wait(atMost: .seconds(3600), clock: clock)
                dialing = dialing.filter { configured($0) != nil }
            }
        }
    }

    /// Keeps one outbound connection to `id`, redialing with backoff (100 ms up to 2 s), while it is a member.
    private func keepConnected(to id: MemberID) async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            // The committed configuration's address, each time: a change may have moved or removed the member.
            guard let member = configured(id) else { return }
            guard let (host, port) = PeerConfig.hostPort(member.address) else { return }
            do {
                let connection = try await Mesh.dial(host: host, port: port, tls: tls)
                guard connection.peer == .node(id.name) else {
                    await connection.close()
                    logger.error(
                        "mesh member answers with another identity",
                        metadata: ["mesh.member": "\(id)", "mesh.address": "\(member.address)", "mesh.identity": "\(connection.peer)"])
                    try? await clock.sleep(for: .seconds(5))
                    continue
                }
                verified(id, certificate: connection.certificate)
                backoff = .milliseconds(100)
                try? await connection.channel.executeThenClose { inbound, outbound in
                    try await self.sayHello(to: id, on: outbound)
                    self.links.opened(outbound, to: id)
                    defer { self.links.closed(id) }
                    for try await message in inbound { _ = self.tookHello(message, from: id) }
                }
                if Task.isCancelled { return }
                await lost(id, why: "our connection to it closed")
            } catch {
                if Task.isCancelled { return }
                if Self.isRefusal(error) {
                    await lost(id, why: "connection refused")
                } else {
                    logger.debug("mesh dial failed", metadata: ["mesh.member": "\(id)", "error": "\(error)"])
                }
            }
            try? await clock.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(2))
        }
    }

    /// A verified handshake: the member's datagram key, derived again when it presents another certificate.
    private func verified(_ member: MemberID, certificate: Certificate) {
        // Revoked since its handshake (the revocation loop ran in between): no key for it.
        guard revocationGuard.refusal(of: certificate) == nil else { return }
        certificates[member] = certificate
        do {
            let rotated = datagrams.knows(member.name)
            let changed = try datagrams.verified(member.name, fingerprint: try certificate.fingerprint(), now: clock.now()) {
                try SealedDatagram.pairKey(tls: tls, myName: me.name, peerName: member.name, peer: certificate)
            }
            if changed && rotated {
                logger.info("mesh member presents a new certificate; its datagram key follows", metadata: ["mesh.member": "\(member)"])
            } else if changed {
                logger.debug("mesh member verified", metadata: ["mesh.member": "\(member)"])
            }
        } catch {
            logger.error("cannot derive the datagram key for a member", metadata: ["mesh.member": "\(member)", "error": "\(error)"])
        }
    }

    /// The first frame on every connection with a member, either way: this node's session and next counter.
    private func sayHello(to member: MemberID, on outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        guard let hello = datagrams.hello(to: member.name) else { return }
        try await outbound.write(DatagramPeers.HelloFrame(hello).encoded)
    }

    /// Whether `frame` is a member's hello, taken: its datagrams are taken from that session on. The first ever is
    /// persisted: from then on this node refuses that member's unnumbered datagrams, after restarts too.
    private func tookHello(_ frame: ByteBuffer, from member: MemberID) -> Bool {
        guard let hello = DatagramPeers.HelloFrame.decode(frame) else { return false }
        if datagrams.received(hello, from: member.name) { remember { $0.numbering = datagrams.numbering.sorted() } }
        return true
    }

    func remember(_ change: (inout MeshPeers) -> Void) {
        change(&remembered)
        do {
            try state.write(remembered, to: .meshPeers)
        } catch {
            logger.warning("cannot persist what this node knows of the members", metadata: ["error": "\(error)"])
        }
    }

    func lost(_ member: MemberID, why: String) async {
        logger.debug("mesh connection lost", metadata: ["mesh.member": "\(member)", "reason": "\(why)"])
        await carryOut(node.connectionLost(to: member, now: clock.now()))
        deadlinesMayHaveMoved()
    }

    /// What every member's `mesh.members` must agree on — names, mesh addresses, roles — as 16 hex digits of a
    /// SHA-256 (in any order of the list).
    static func configurationDigest(_ members: [PeerConfig.Mesh.Member]) -> String {
        let lines = members.map { "\($0.name) \($0.address) \($0.role)" }.sorted().joined(separator: "\n")
        return String(sha256Hex(lines.utf8).prefix(16))
    }

    static func isRefusal(_ error: any Error) -> Bool {
        if let io = error as? IOError { return io.errnoCode == ECONNREFUSED || io.errnoCode == ECONNRESET }
        if let connection = error as? NIOConnectionError {
            return connection.connectionErrors.contains { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
        }
        return "\(error)".contains("refused")
    }
}
