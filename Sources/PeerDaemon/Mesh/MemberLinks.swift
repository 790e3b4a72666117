import NIOConcurrencyHelpers
import NIOCore
import PeerCore

/// Messages between members that are too big or too rare for datagrams (an origin certificate), over the mesh's
/// mutual-TLS connections. The mesh registers each open connection and hands over what arrives; a service sends
/// and receives here without knowing the mesh.
final class MemberLinks: Sendable {
    private let links = NIOLockedValueBox<[MemberID: NIOAsyncChannelOutboundWriter<ByteBuffer>]>([:])
    /// What members sent, with the sender's name.
    let inbound: AsyncStream<(from: MemberID, message: ByteBuffer)>
    private let continuation: AsyncStream<(from: MemberID, message: ByteBuffer)>.Continuation

    init() {
        (inbound, continuation) = AsyncStream.makeStream(of: (from: MemberID, message: ByteBuffer).self, bufferingPolicy: .bufferingNewest(64))
    }

    /// Sends one message to a member over this node's connection to it; false when there is none open.
    func send(_ message: ByteBuffer, to member: MemberID) async -> Bool {
        guard let link = links.withLockedValue({ $0[member] }) else { return false }
        do {
            try await link.write(message)
            return true
        } catch {
            return false
        }
    }

    // The mesh's side.

    func opened(_ writer: NIOAsyncChannelOutboundWriter<ByteBuffer>, to member: MemberID) { links.withLockedValue { $0[member] = writer } }
    func closed(_ member: MemberID) { _ = links.withLockedValue { $0.removeValue(forKey: member) } }
    func received(_ message: ByteBuffer, from member: MemberID) { continuation.yield((member, message)) }
}
