import Cluster
import Foundation
import Logging
import NIOCore
import PKI
import PeerConfiguration
import PeerCore
import ServiceLifecycle
import X509

/// The certificate revocations of the cluster (`peerctl cert revoke`), on every node of the mesh, witnesses too.
///
/// - A revocation is signed by the cluster CA's key, so any node takes it from anyone — an operator, a member —
///   once the signature checks out; the CA key stays where the certificates are issued.
/// - Each node keeps what it took in `revoked.json` (read before the mesh listens: a restart must not let a revoked
///   certificate back in), publishes it for the mesh to enforce (``Transport/RevocationGuard``: handshakes refused,
///   open connections cut, datagram keys dropped), and gossips the list's digest. A member that announces another
///   digest is sent the whole list — lists only grow, so two nodes that swap theirs end up with the same one.
actor RevocationService: Service {
    /// What one node sends another on the mesh connection: `{"revocations": [...]}`. An entry this peerd cannot read
    /// (a kind a newer one adds) is left out, not the whole message.
    struct MemberMessage: Codable, Sendable {
        var revocations: [Revocation]

        init(revocations: [Revocation]) { self.revocations = revocations }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            revocations = try container.decode([Stored].self, forKey: .revocations).compactMap(\.revocation)
        }
    }

    /// An entry of `revoked.json` or of a member's list, or nil when it is not one this peerd knows (a kind a newer
    /// peerd adds: a file it wrote still starts this one, its messages are still read).
    struct Stored: Codable, Sendable {
        var revocation: Revocation?
        init(_ revocation: Revocation) { self.revocation = revocation }
        init(from decoder: any Decoder) throws { revocation = try? Revocation(from: decoder) }
        func encode(to encoder: any Encoder) throws { try revocation.encode(to: encoder) }
    }

    /// What the node holds, published for the mesh (which enforces it).
    nonisolated let list: Published<RevocationList>
    nonisolated let ca: Certificate
    nonisolated let me: String
    nonisolated let cluster: Published<ClusterState>
    nonisolated let announcements: Published<Announcement>
    nonisolated let links: MemberLinks
    nonisolated let clock: any PeerClock
    nonisolated let logger: Logger
    nonisolated let state: StateDirectory
    private var lastSent: [String: (digest: String, at: Instant)] = [:]

    /// Reads the stored revocations; a file that cannot be read stops peerd (starting without it would let revoked
    /// certificates back in).
    init(
        config: PeerConfig, mesh: PeerConfig.Mesh, cluster: Published<ClusterState>, announcements: Published<Announcement>,
        links: MemberLinks, clock: any PeerClock, logger: Logger
    ) throws {
        guard let data = FileManager.default.contents(atPath: mesh.ca) else {
            throw StartupError(description: "\(config.path): mesh: \(mesh.ca) cannot be read")
        }
        do {
            ca = try Certificate(pemEncoded: String(decoding: data, as: UTF8.self))
        } catch {
            throw StartupError(description: "\(config.path): mesh.ca \(mesh.ca) is not a PEM certificate (\(error))")
        }
        me = config.node.name
        state = StateDirectory(config.stateDirectory)
        var stored = RevocationList()
        do {
            let (_, refused) = stored.merge((try state.read(.revocations) ?? []).compactMap(\.revocation), ca: ca)
            if refused > 0 {
                logger.warning(
                    "stored revocations not signed by this cluster's CA are ignored",
                    metadata: ["count": "\(refused)", "file": "\(state.path(of: .revocations))"])
            }
        } catch {
            throw StartupError(description: "\(error)")
        }
        list = Published(stored)
        self.cluster = cluster
        self.announcements = announcements
        self.links = links
        self.clock = clock
        self.logger = logger
        if let mine = stored.refusal(of: try Self.ownCertificate(mesh, config: config)) {
            logger.error("this node's own certificate is revoked: the others refuse it", metadata: ["reason": "\(mine)"])
        }
    }

    private static func ownCertificate(_ mesh: PeerConfig.Mesh, config: PeerConfig) throws -> Certificate {
        guard let data = FileManager.default.contents(atPath: mesh.certificate),
            let certificate = try? Certificate(pemEncoded: String(decoding: data, as: UTF8.self))
        else { throw StartupError(description: "\(config.path): mesh.cert \(mesh.certificate) cannot be read as a PEM certificate") }
        return certificate
    }

    /// Takes the revocations the CA signed that this node lacks (from an operator or a member); persists them, then
    /// enforces, announces and hands them on (even when they could not be persisted: then it throws after). Says
    /// what was added and how many were refused.
    @discardableResult
    func take(_ offered: [Revocation], from: String) async throws -> (added: [Revocation], refused: Int) {
        var next = list.current
        let (added, refused) = next.merge(offered, ca: ca)
        if refused > 0 {
            logger.warning(
                "revocations refused: not signed by this cluster's CA, or the list is full", metadata: ["count": "\(refused)", "from": "\(from)"])
        }
        guard !added.isEmpty else { return (added, refused) }
        // Enforced and handed on even if it cannot be stored here (a full disk): a revocation must not wait on
        // that; the others hand it back after a restart.
        var unstored: (any Error)?
        do {
            try state.write(next.sorted.map(Stored.init), to: .revocations)
        } catch {
            logger.error("revocations not stored (enforced until peerd restarts)", metadata: ["error": "\(error)"])
            unstored = error
        }
        list.publish(next)
        for revocation in added {
            logger.notice("certificate revoked", metadata: ["revocation": "\(revocation.summary)", "from": "\(from)"])
        }
        announce()
        await sendToOthers(force: true)
        if let unstored { throw unstored }
        return (added, refused)
    }

    private func announce() {
        let digest = list.current.digest
        announcements.update { $0.revocations = digest }
    }

    /// A member's list: the entries it has and this node lacks are taken (after the same checks as an operator's).
    private func received(_ message: ByteBuffer, from member: MemberID) async {
        guard let decoded = try? JSONDecoder().decode(MemberMessage.self, from: Data(buffer: message)) else {
            logger.warning("unreadable revocations from a member", metadata: ["mesh.member": "\(member)", "bytes": "\(message.readableBytes)"])
            return
        }
        do {
            try await take(decoded.revocations, from: "member \(member.name)")
        } catch {
            logger.error("revocations from a member not stored", metadata: ["mesh.member": "\(member)", "error": "\(error)"])
        }
    }

    /// Sends this node's list to every live member that announces another digest (at most every 10 s to each,
    /// unless `force`: this node just took new ones). A member that announces none yet is sent nothing while this
    /// node has none either.
    private func sendToOthers(force: Bool) async {
        let mine = list.current
        guard let digest = mine.digest else { return }
        let now = clock.now()
        let others = cluster.current.members.filter { $0.id.name != me && $0.status != .dead && $0.app.revocations != digest }
        guard !others.isEmpty, let encoded = try? JSONEncoder().encode(MemberMessage(revocations: mine.sorted)) else { return }
        let message = ByteBuffer(bytes: encoded)
        for other in others {
            if !force, let last = lastSent[other.id.name], last.digest == digest, now - last.at < .seconds(10) { continue }
            if await links.send(message, to: other.id) {
                lastSent[other.id.name] = (digest, now)
                logger.debug("revocations sent", metadata: ["mesh.member": "\(other.id)", "revocations": "\(mine.count)"])
            }
        }
    }

    func run() async throws {
        announce()
        let wakeup = Wakeup()
        cluster.watch(wakeup) { old, new in old.members != new.members }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await (from, message) in self.links.inbound(.revocations) { await self.received(message, from: from) }
                }
                while !Task.isCancelled {
                    await self.sendToOthers(force: false)
                    await wakeup.wait(atMost: .seconds(2), clock: self.clock)
                }
                group.cancelAll()
            }
        }
    }
}

extension StateDirectory.File {
    /// The certificate revocations this node holds (``RevocationService``).
    static var revocations: StateDirectory.File<[RevocationService.Stored]> { .init("revoked.json") }
}
