import PeerConfiguration
import CPeerProcess
import Cluster
import Crypto
import Foundation
import Leadership
import Logging
import Membership
import NIOCore
import NIOPosix
import PKI
import PeerCore
import ServiceLifecycle
import Transport
import X509

/// The membership's datagrams: opened and handed to the mesh node, and what it asks for carried out.
extension MeshService {
    func received(_ datagram: AddressedEnvelope<ByteBuffer>) async {
        stats.count {
            $0.datagramsReceived += 1
            $0.bytesReceived += datagram.data.readableBytes
        }
        let message: MeshNode.Datagram
        let from: MemberID
        do {
            let opened = try datagrams.open(datagram.data, now: clock.now())
            from = MemberID(opened.sender)
            message = try decoder.decode(MeshNode.Datagram.self, from: opened.payload)
        } catch {
            stats.count {
                $0.datagramsDropped += 1
                if case .replayed = error as? SealedDatagram.Failure { $0.datagramsReplayed += 1 }
            }
            logger.trace("datagram dropped", metadata: ["mesh.remote": "\(datagram.remoteAddress)", "reason": "\(error)"])
            return
        }
        let (certificates, me, mine) = (self.certificates, self.me, self.certificate)
        var refused = MeshStats.Refusals()
        let directives = node.receive(message, from: from, now: clock.now()) { state in
            guard let certificate = state.id == me ? mine : certificates[state.id] else {
                refused.certificateNotSeen += 1
                return false
            }
            guard state.proof != nil else {
                refused.noSignature += 1
                return false
            }
            guard MemberProof.verifies(state.proof, of: Self.claim(state), by: certificate) else {
                refused.badSignature += 1
                return false
            }
            return true
        }
        if refused != MeshStats.Refusals() { stats.count { $0.claimsRefused.add(refused) } }
        await carryOut(directives)
        let measured = node.swim.measurements
        stats.measured(lastSeen: measured.lastSeen, rtt: measured.rtt)
        deadlinesMayHaveMoved()
    }

    func carryOut(_ directives: [MeshNode.Directive]) async {
        var persistFailed = false
        for directive in directives {
            switch directive {
            case .persistTerm(let term):
                do {
                    // The node's own promise, never lower than this batch's: another batch, carried out while this one
                    // awaited a send, may have promised a higher term already.
                    try state.writePromisedTerm(max(term, node.lease.promised))
                } catch {
                    // Not persisted, not promised: no lease message of this batch leaves.
                    logger.error("cannot persist the lease term; not answering", metadata: ["error": "\(error)"])
                    persistFailed = true
                }
            case .persistConfiguration:
                // What the node holds now (a later batch, carried out while this one awaited a send, may hold a newer
                // one): never an older configuration written over a newer.
                let (committed, pending) = (node.council.committed, node.council.pending)
                do {
                    try state.write(StoredConfiguration(committed: committed, pending: pending), to: .configuration)
                } catch {
                    // Not persisted, not accepted — and the node holds it all the same: from now on it takes no part in
                    // leases or changes (an acceptance a restart forgets could let two configurations commit).
                    logger.error(
                        "cannot persist the cluster's configuration: this node stops voting and leading until it is restarted with a writable state_dir",
                        metadata: ["error": "\(error)"])
                    configurationUnwritable = true
                }
                // A member a change under way adds is admitted and dialed at once: its acceptance may be needed to
                // commit the change (one node becoming two).
                follow(committed, pending: pending)
            case .configurationCommitted(let configuration):
                logger.info(
                    "the cluster's configuration changed",
                    metadata: [
                        "configuration.epoch": "\(configuration.epoch)",
                        "configuration.members":
                            "\(configuration.members.map { $0.appNode ? $0.id.name : "\($0.id.name) (witness)" }.joined(separator: ","))",
                    ])
            case .send(let datagram, let to):
                if persistFailed || configurationUnwritable, datagram.isLeaseOrConfiguration { continue }
                await send(datagram, to: to)
            case .memberChanged(let state, let previous):
                log(state, previous: previous)
            case .leadership(let term):
                if let term {
                    logger.info("this node leads", metadata: ["lease.term": "\(term)"])
                } else {
                    logger.info("this node no longer leads")
                }
            case .publish(let state):
                cluster.publish(state)
            case .persistConfigurations(let known):
                remember { $0.configurations = Dictionary(uniqueKeysWithValues: known.map { ($0.key.name, $0.value) }) }
            case .refused(let member, let relay) where member == me:
                logger.warning(
                    "a member relayed a state of this node far above its incarnation, without this node's signature: not refuted (a forgery, or a previous run under a key since rotated: if peerctl members elsewhere shows this node dead, restart the relaying member)",
                    metadata: ["mesh.relay": "\(relay)"])
            case .refused(let member, let relay):
                logger.debug(
                    "a member relayed another's state without its signature: not taken",
                    metadata: ["mesh.member": "\(member)", "mesh.relay": "\(relay)"])
            case .configurationMismatch(let others):
                if others.isEmpty {
                    logger.info("every member runs this node's configuration again: leader elections resume")
                } else {
                    logger.warning(
                        "members run another cluster configuration (mesh.members differs): no leader until every member lists the same members",
                        metadata: [
                            "mesh.members_differing": "\(others.map(\.name).joined(separator: ","))",
                            "mesh.configuration": "\(node.configuration ?? "")",
                        ])
                }
            }
        }
    }

    /// Admission, addresses and dialers follow the configurations this node holds.
    func follow(_ committed: Configuration, pending: Configuration?) {
        let members = Self.members(committed, pending: pending)
        admitted.withLockedValue { $0 = Set(members.map(\.id.name)) }
        addresses = Self.socketAddresses(members)
        membersChanged.wake()
    }

    /// The members of the committed configuration and of a change under way (its address where both name one).
    static func members(_ committed: Configuration, pending: Configuration?) -> [Configuration.Member] {
        let proposed = (pending?.members ?? []).filter { committed.member($0.id) == nil }
        return committed.members + proposed
    }

    /// What a member's proof covers: its id, incarnation and app status.
    static func claim(_ state: ClusterState.Member) -> Data {
        MemberProof.claim(id: state.id.name, incarnation: state.incarnation, app: state.app)
    }

    /// `message` with this node's signature on every copy of its own state it carries (the protocol does not sign:
    /// the shell holds the key).
    func signed(_ message: MeshNode.Datagram) -> MeshNode.Datagram {
        guard case .swim(var envelope) = message else { return message }
        func sign(_ state: inout ClusterState.Member) {
            guard state.id == me else { return }
            state.proof = proofs.proof(of: Self.claim(state))
        }
        sign(&envelope.sender)
        for index in envelope.gossip.indices { sign(&envelope.gossip[index]) }
        return .swim(envelope)
    }

    func send(_ message: MeshNode.Datagram, to: MemberID) async {
        guard let address = addresses[to], let outbound else { return }
        let message = signed(message)
        do {
            guard let sealed = try datagrams.seal(try encoder.encode(message), to: to.name) else { return }
            guard sealed.readableBytes <= SealedDatagram.maximumSize else {
                // Gossip is cut to size (AppStatus.bounded): this is a bug, and it must show, not vanish.
                logger.error("datagram too big to send", metadata: ["mesh.member": "\(to)", "bytes": "\(sealed.readableBytes)"])
                return
            }
            stats.count {
                $0.datagramsSent += 1
                $0.bytesSent += sealed.readableBytes
            }
            try await outbound.write(AddressedEnvelope(remoteAddress: address, data: sealed))
        } catch {
            logger.debug("datagram not sent", metadata: ["mesh.member": "\(to)", "error": "\(error)"])
        }
    }

    func log(_ state: ClusterState.Member, previous: ClusterState.Member) {
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

    func warnIfCertificateExpiresSoon() {
        let days = ClusterCA.daysLeft(certificate)
        guard days <= 30 else { return }
        logger.warning(
            "this node's mesh certificate expires soon: renew it with peerctl cert issue",
            metadata: ["cert.days_left": "\(days)", "cert.file": "\(mesh.certificate)"])
    }
}

extension MeshNode.Datagram {
    /// A lease or configuration message: what must not leave after a failed persist.
    var isLeaseOrConfiguration: Bool {
        switch self {
        case .swim: false
        case .lease, .configuration: true
        }
    }
}
