import PeerConfiguration
import Cluster
import Foundation
import Logging
import Membership
import NIOCore
import Nginx
import Notify
import PKI
import PeerCore
import PeerFiles
import ServiceLifecycle
import X509

/// The origin certificate nginx serves on its HTTPS listener, owned by the cluster.
///
/// - `peerctl tls set` hands a pair to any node: it is checked (key matches, valid now, covers the site's
///   host name) before anything changes, installed here (files 0600, nginx rewritten, `nginx -t`, reloaded, the
///   listener checked to present it), announced in the gossip, and sent to every other node over the mesh's
///   mutual-TLS connections — with the signature that lets it into the cluster (``PKI/OriginAuthority``: the
///   cluster CA's key or an operator's with the `tls` scope). A node takes a pair from a member only with it: a
///   member cannot hand the others a certificate of its own making.
/// - Every node announces which pair it serves; a node that serves an older one (it was down, or joined later)
///   is sent the newest by the nodes that have it, every 15 s until it serves it.
/// - The leader notifies 30, 7 and 1 day(s) before the certificate expires.
actor OriginTLSService: Service {
    /// What is installed, kept next to the files as `tls/origin.json` (no key in it).
    struct Installed: Codable, Sendable {
        var info: OriginCertificateInfo
        var setAt: Int64
        /// Who let it in (nil: set before signatures, or on a node without a mesh): sent with the pair.
        var authority: OriginAuthority?

        var mark: OriginMark { OriginMark(fingerprint: info.fingerprint, setAt: setAt, notAfter: Int64(info.notValidAfter.timeIntervalSince1970)) }
    }

    /// What one node sends another on the mesh connection.
    enum MemberMessage: Codable, Sendable {
        case origin(OriginPair, setAt: Int64, authority: OriginAuthority? = nil)
    }

    public struct Refused: Error, CustomStringConvertible {
        public let description: String
    }

    nonisolated let config: PeerConfig
    nonisolated let nginx: NginxProxy
    /// The mesh's side of this service: the cluster state it reads, where it announces what it serves, and the
    /// connections to the other members. nil for a node without a mesh.
    struct Mesh: Sendable {
        let cluster: Published<ClusterState>
        let announcements: Published<Announcement>
        let links: MemberLinks
        /// The cluster CA (`mesh.ca`) and the revocations: what an origin certificate's signature is checked against.
        let ca: Certificate
        let revocations: Published<RevocationList>
    }

    nonisolated let mesh: Mesh?
    nonisolated let notices: NoticeDispatcher?
    nonisolated let clock: any PeerClock
    nonisolated let logger: Logger
    nonisolated let state: StateDirectory
    private var installed: Installed?
    private var lastSent: [String: (fingerprint: String, at: Instant)] = [:]
    /// Whether the installed pair's signature still lets it in (an operator's certificate expires or is revoked),
    /// checked at most once a minute; and when that was last logged.
    private var authorityChecked: (authority: OriginAuthority, at: Instant, refusal: String?)?
    private var authorityWarned: Instant?

    init(config: PeerConfig, nginx: NginxProxy, mesh: Mesh?, notices: NoticeDispatcher?, clock: any PeerClock, logger: Logger) {
        self.config = config
        self.nginx = nginx
        self.mesh = mesh
        self.notices = notices
        self.clock = clock
        self.logger = logger
        self.state = StateDirectory(config.stateDirectory)
        do {
            if let stored = try state.read(.origin) {
                if FileManager.default.fileExists(atPath: config.originFiles(fingerprint: stored.info.fingerprint).key) {
                    installed = stored
                } else {
                    logger.error(
                        "the installed origin certificate's key is gone; serving without it until a pair is set again",
                        metadata: ["tls.key": "\(config.originFiles(fingerprint: stored.info.fingerprint).key)"])
                }
            }
        } catch {
            logger.error("the installed origin certificate's record is unreadable; serving without it", metadata: ["error": "\(error)"])
        }
    }

    /// What is installed (for `peerctl status`).
    func current() -> Installed? { installed }

    /// An operator's pair: installed here, then sent to every other node. On a mesh with other app nodes it must
    /// come with a signature that lets it into the cluster (the others would refuse it from this node otherwise).
    func set(_ pair: OriginPair, requestedBy: String, authority: OriginAuthority?) async throws -> Installed {
        let now = Date()
        var setAt = Int64(now.timeIntervalSince1970 * 1000)
        var signer = "nobody (a node without other app nodes)"
        var authority = authority
        if let mesh, let given = authority {
            do {
                signer = try await given.signer(of: pair.certificatePEM, ca: mesh.ca, revocations: mesh.revocations.current, now: now)
            } catch {
                throw Refused(description: "certificate refused, nothing changed: \(error)")
            }
            // Dated by the signer's clock: not ahead of this node's by more than a few minutes (it would win over
            // every pair set after it).
            guard given.setAt <= setAt + 300_000 else {
                throw Refused(description: "certificate refused, nothing changed: it is signed as set in the future (the signer's clock is ahead)")
            }
            // Nor behind the pair installed: the newest pair wins in the cluster, so the others would keep (and hand
            // back) the one installed.
            if let installed, installed.info.fingerprint != (try? OriginCertificate.info(certificatePEM: pair.certificatePEM).fingerprint),
                given.setAt <= installed.setAt
            {
                throw Refused(
                    description:
                        "certificate refused, nothing changed: it is signed as set at \(given.setAt / 1000) (seconds since 1970), before the certificate installed (set at \(installed.setAt / 1000)): the signing machine's clock is behind; correct it (timedatectl) and run peerctl tls set again"
                )
            }
            setAt = given.setAt
        } else if mesh == nil {
            authority = nil  // not checked, not kept: a node alone hands the pair to no one
        } else if let members = config.mesh?.members, members.contains(where: { $0.role == .node && $0.name != config.node.name }) {
            throw Refused(
                description:
                    "certificate refused, nothing changed: the other nodes take an origin certificate only with the signature of the cluster CA or of an operator with the tls scope. Run peerctl tls set where the CA key is (ca-key.pem next to mesh.ca), or add --operator-cert and --operator-key of an operator with the tls scope (peerctl operator add NAME --scope tls)"
            )
        }
        try await install(pair, setAt: setAt, authority: authority)
        logger.info(
            "origin certificate set",
            metadata: [
                "tls.fingerprint": "\(installed!.mark.fingerprint)", "tls.requested_by": "\(requestedBy)", "tls.signed_by": "\(signer)",
                "tls.days_left": "\(installed!.info.daysLeft())",
            ])
        await announce()
        await sendToOthers(force: true)
        return installed!
    }

    /// Checks, writes and serves a pair; throws (having changed nothing) when it is refused or nginx does not take it.
    private func install(_ pair: OriginPair, setAt: Int64, authority: OriginAuthority?) async throws {
        guard let hostname = config.nginx.tlsHostname else {
            throw Refused(
                description:
                    "\(config.path): nginx.server_name (\(config.nginx.serverName)) names no host the certificate must cover; set nginx.tls.hostname, e.g. shop.example.com"
            )
        }
        let info: OriginCertificateInfo
        do {
            info = try OriginCertificate.validate(pair, hostname: hostname)
        } catch let rejected as OriginCertificate.Rejected {
            throw Refused(description: "certificate refused, nothing changed: \(rejected.description)")
        }
        if let installed, installed.info.fingerprint == info.fingerprint {
            // The same certificate again: nothing for nginx to do. A newer signature replaces the one kept (with its
            // date); an unsigned copy changes nothing.
            if authority != nil, setAt >= installed.setAt { try save(Installed(info: info, setAt: setAt, authority: authority)) }
            return
        }
        let files = config.originFiles(fingerprint: info.fingerprint)
        try AtomicFile.makeDirectory(config.stateDirectory + "/tls", mode: 0o700)
        try AtomicFile.write(Array(pair.keyPEM.utf8), to: files.key, mode: 0o600)
        try AtomicFile.write(Array(pair.certificatePEM.utf8), to: files.certificate, mode: 0o600)
        do {
            try await nginx.setTLS(config.nginxTLS(fingerprint: info.fingerprint), fingerprint: info.fingerprint, serverName: hostname)
        } catch {
            try? FileManager.default.removeItem(atPath: files.key)
            try? FileManager.default.removeItem(atPath: files.certificate)
            throw Refused(description: "nginx did not take the certificate, it serves what it served before: \(error)")
        }
        let previous = installed
        try save(Installed(info: info, setAt: setAt, authority: authority))
        if let previous, previous.info.fingerprint != info.fingerprint {
            let old = config.originFiles(fingerprint: previous.info.fingerprint)
            try? FileManager.default.removeItem(atPath: old.key)
            try? FileManager.default.removeItem(atPath: old.certificate)
        }
    }

    private func save(_ value: Installed) throws {
        try state.write(value, to: .origin)
        installed = value
    }

    private func announce() async {
        let mark = installed?.mark
        mesh?.announcements.update { $0.origin = mark }
    }

    // MARK: - Between nodes

    /// A message from a member over the mesh: a pair newer than ours is installed (after the same checks as an
    /// operator's); anything else is ignored. Nothing a member sends can break what serves.
    public func received(_ message: ByteBuffer, from member: String) async {
        let decoded: MemberMessage
        do {
            decoded = try JSONDecoder().decode(MemberMessage.self, from: Data(buffer: message))
        } catch {
            logger.warning("unreadable message from a member", metadata: ["mesh.member": "\(member)", "bytes": "\(message.readableBytes)"])
            return
        }
        switch decoded {
        case .origin(let pair, let setAt, let authority):
            guard let mesh else { return }
            if let refusal = await Self.refusal(
                of: pair, setAt: setAt, authority: authority, from: member, config: config, ca: mesh.ca, revocations: mesh.revocations.current)
            {
                logger.warning("origin certificate from a member refused", metadata: ["mesh.member": "\(member)", "reason": "\(refusal)"])
                return
            }
            guard let fingerprint = try? OriginCertificate.info(certificatePEM: pair.certificatePEM).fingerprint else { return }
            let offered = OriginMark(fingerprint: fingerprint, setAt: setAt, notAfter: 0)
            if let mine = installed?.mark, !(mine < offered) { return }
            do {
                try await install(pair, setAt: setAt, authority: authority)
                logger.info(
                    "origin certificate installed from a member", metadata: ["mesh.member": "\(member)", "tls.fingerprint": "\(offered.fingerprint)"])
                await announce()
            } catch {
                logger.error("origin certificate from a member not installed", metadata: ["mesh.member": "\(member)", "error": "\(error)"])
            }
        }
    }

    /// Why a pair that `member` sent is not taken; nil when it may be (if newer than the one installed). A witness
    /// holds no secrets by design: a pair from one is not its to give. Nor is it any member's: only the signature of
    /// the cluster CA or of an operator with the tls scope, over this certificate and date, lets a pair in.
    static func refusal(
        of pair: OriginPair, setAt: Int64, authority: OriginAuthority?, from member: String, config: PeerConfig, ca: Certificate,
        revocations: RevocationList
    ) async -> String? {
        guard config.mesh?.members.contains(where: { $0.name == member && $0.role == .node }) == true else {
            return "only app nodes hand origin certificates on"
        }
        guard let authority else {
            return "it carries no signature of the cluster CA or of an operator (set it again with peerctl tls set)"
        }
        guard authority.setAt == setAt else { return "its signature is for another date" }
        do {
            _ = try await authority.signer(of: pair.certificatePEM, ca: ca, revocations: revocations)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Sends our pair to every live app node that announces an older one (or none). `force`: also to those
    /// sent to less than 15 s ago (a new pair from the operator).
    private func sendToOthers(force: Bool) async {
        // A pair without a signature (set before them) is not sent: the others would refuse it.
        guard let mesh, let installed, let authority = installed.authority else { return }
        let mine = installed.mark
        let now = clock.now()
        let others = mesh.cluster.current.appMembers.filter {
            $0.id.name != config.node.name && $0.status != .dead && ($0.app.origin.map { $0 < mine } ?? true)
        }
        guard !others.isEmpty else { return }
        let files = config.originFiles(fingerprint: installed.info.fingerprint)
        // Nor one whose signature no longer checks out (the signing operator's certificate expired or was revoked):
        // the others would refuse it on every resend.
        if authorityChecked.map({ $0.authority != authority || now - $0.at >= .seconds(60) }) ?? true {
            let certificate = FileManager.default.contents(atPath: files.certificate).map { String(decoding: $0, as: UTF8.self) } ?? ""
            var refusal: String?
            do {
                _ = try await authority.signer(of: certificate, ca: mesh.ca, revocations: mesh.revocations.current)
            } catch {
                refusal = "\(error)"
            }
            authorityChecked = (authority, now, refusal)
        }
        if let refusal = authorityChecked?.refusal {
            if authorityWarned.map({ now - $0 >= .seconds(3600) }) ?? true {
                authorityWarned = now
                logger.warning(
                    "the installed origin certificate's signature no longer lets it in; nodes that miss it are not sent it: set it again with peerctl tls set",
                    metadata: ["reason": "\(refusal)", "mesh.members_missing": "\(others.map(\.id.name).joined(separator: ","))"])
            }
            return
        }
        guard let certificate = FileManager.default.contents(atPath: files.certificate), let key = FileManager.default.contents(atPath: files.key)
        else {
            logger.error("the installed origin certificate's files are gone", metadata: ["tls.certificate": "\(files.certificate)"])
            return
        }
        let message: ByteBuffer
        do {
            let pair = OriginPair(certificatePEM: String(decoding: certificate, as: UTF8.self), keyPEM: String(decoding: key, as: UTF8.self))
            message = ByteBuffer(bytes: try JSONEncoder().encode(MemberMessage.origin(pair, setAt: installed.setAt, authority: installed.authority)))
        } catch {
            return
        }
        for other in others {
            if !force, let last = lastSent[other.id.name], last.fingerprint == mine.fingerprint, now - last.at < .seconds(15) { continue }
            if await mesh.links.send(message, to: other.id) {
                lastSent[other.id.name] = (mine.fingerprint, now)
                logger.debug("origin certificate sent", metadata: ["mesh.member": "\(other.id)", "tls.fingerprint": "\(mine.fingerprint)"])
            }
        }
    }

    // MARK: - Running

    public func run() async throws {
        await adopt()
        await announce()
        if let installed, installed.authority == nil,
            config.mesh?.members.contains(where: { $0.role == .node && $0.name != config.node.name }) == true
        {
            logger.warning(
                "the installed origin certificate carries no signature of the cluster CA or of an operator (it was set before peerd signed them): it is not sent to nodes that miss it; set it again with peerctl tls set",
                metadata: ["tls.fingerprint": "\(installed.mark.fingerprint)"])
        }
        // Ends (without an error, which would stop the other services at once) on graceful shutdown.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                if let links = self.mesh?.links {
                    group.addTask {
                        for await (from, message) in links.inbound(.origin) { await self.received(message, from: from.name) }
                    }
                }
                while !Task.isCancelled {
                    await self.sendToOthers(force: false)
                    await self.watchExpiry()
                    try? await self.clock.sleep(for: .seconds(2))
                }
                group.cancelAll()
            }
        }
    }

    /// After a restart: nginx already serves the installed pair (nothing to reload), or it is put back.
    private func adopt() async {
        guard let installed else { return }
        let tls = config.nginxTLS(fingerprint: installed.info.fingerprint)
        let site = FileManager.default.contents(atPath: config.nginx.site).map { String(decoding: $0, as: UTF8.self) } ?? ""
        if site.contains("ssl_certificate \(tls.certificatePath);") {
            await nginx.adoptTLS(tls)
            return
        }
        do {
            try await nginx.setTLS(tls, fingerprint: installed.info.fingerprint, serverName: config.nginx.tlsHostname)
        } catch {
            logger.error("cannot serve the installed origin certificate", metadata: ["error": "\(error)"])
        }
    }

    /// The leader tells the operator once when the certificate crosses 30, 7 and 1 day(s) left.
    private func watchExpiry() async {
        guard let installed, let mesh, mesh.cluster.current.fence(now: clock.now()) != nil else { return }
        let days = installed.info.daysLeft()
        guard days <= 30 else { return }
        let bucket = days <= 1 ? 1 : days <= 7 ? 7 : 30
        let host = config.nginx.tlsHostname ?? config.nginx.serverName
        await notices?.post(
            Notice(
                kind: .certificateExpiring, title: "origin certificate for \(host) expires in \(max(days, 0)) days",
                body:
                    "Create a new one (Cloudflare: SSL/TLS › Origin Server) and install it on every node: peerctl tls set --cert origin.pem --key origin-key.pem",
                key: "origin/\(installed.info.fingerprint.prefix(16))/\(bucket)"))
    }
}

extension StateDirectory.File where Value == OriginTLSService.Installed {
    static var origin: Self { .init("tls/origin.json") }
}
