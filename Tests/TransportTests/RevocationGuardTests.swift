import NIOCore
import NIOEmbedded
import PKI
import Testing

@testable import Transport

/// The guard's own bookkeeping, without sockets: a connection whose certificate was revoked between its handshake
/// and its registration (the revocation raced it) is closed on registration, and a closed connection is forgotten.
@Suite struct RevocationGuardTests {
    @Test func aConnectionRevokedBeforeItIsRegisteredIsClosedThenAndAClosedOneIsForgotten() throws {
        let ca = try ClusterCA.create(cluster: "test")
        let revokedLater = try ca.issueNode(name: "n2", address: "127.0.0.3").certificate
        let other = try ca.issueNode(name: "n3", address: "127.0.0.4").certificate
        let guardian = RevocationGuard()
        var list = RevocationList()
        list.merge([try ca.revoke(.node("n2"))], ca: ca.certificate)
        #expect(guardian.update(list).isEmpty, "nothing registered yet")

        let raced = EmbeddedChannel()
        _ = try raced.connect(to: SocketAddress(ipAddress: "127.0.0.3", port: 1)).wait()
        #expect(!guardian.register(raced, certificate: revokedLater, identity: .node("n2")))
        #expect(!raced.isActive, "a connection that raced the revocation stays open")

        let fine = EmbeddedChannel()
        _ = try fine.connect(to: SocketAddress(ipAddress: "127.0.0.4", port: 1)).wait()
        #expect(guardian.register(fine, certificate: other, identity: .node("n3")))
        #expect(guardian.openConnections == 1)
        _ = try fine.close().wait()
        fine.embeddedEventLoop.run()
        #expect(guardian.openConnections == 0, "a closed connection is still held")
    }
}
