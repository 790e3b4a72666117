import NIOConcurrencyHelpers
import NIOCore
import PKI
import X509

/// The revocations the mesh enforces, and the connections they may cut: a handshake with a revoked certificate
/// fails (``MeshTLS``), and a connection already open when its certificate is revoked is closed at once
/// (``update(_:)``) — members and operators alike.
public final class RevocationGuard: Sendable {
    private struct Open {
        var certificate: Certificate
        var identity: PeerIdentity
        var channel: any Channel
    }

    private struct State {
        var list: RevocationList
        var open: [ObjectIdentifier: Open] = [:]
    }

    private let state: NIOLockedValueBox<State>

    public init(_ list: RevocationList = RevocationList()) { state = NIOLockedValueBox(State(list: list)) }

    public var list: RevocationList { state.withLockedValue { $0.list } }

    /// Why `certificate` is refused, or nil.
    public func refusal(of certificate: Certificate) -> String? { state.withLockedValue { $0.list.refusal(of: certificate) } }

    /// Enforces `list` from now on: closes every open connection whose certificate it revokes, and says whose.
    @discardableResult
    public func update(_ list: RevocationList) -> [PeerIdentity] {
        let cut = state.withLockedValue { state -> [Open] in
            state.list = list
            let revoked = state.open.filter { list.refusal(of: $0.value.certificate) != nil }
            for key in revoked.keys { state.open[key] = nil }
            return Array(revoked.values)
        }
        for open in cut { open.channel.close(promise: nil) }
        return cut.map(\.identity)
    }

    /// A connection whose handshake passed: kept track of until it closes, so a later revocation can cut it. False
    /// (and the channel closed) when the list changed since the handshake and now revokes its certificate.
    func register(_ channel: any Channel, certificate: Certificate, identity: PeerIdentity) -> Bool {
        let key = ObjectIdentifier(channel)
        let admitted = state.withLockedValue { state -> Bool in
            guard state.list.refusal(of: certificate) == nil else { return false }
            state.open[key] = Open(certificate: certificate, identity: identity, channel: channel)
            return true
        }
        guard admitted else {
            channel.close(promise: nil)
            return false
        }
        channel.closeFuture.whenComplete { [state] _ in _ = state.withLockedValue { $0.open.removeValue(forKey: key) } }
        return true
    }

    /// How many verified connections are open (for tests and metrics).
    public var openConnections: Int { state.withLockedValue { $0.open.count } }
}
