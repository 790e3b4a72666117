import Foundation
import NIOConcurrencyHelpers
import NIOCore
import PeerCore

/// Messages between members that are too big or too rare for datagrams (an origin certificate), over the mesh's
/// mutual-TLS connections. The mesh registers each open connection and hands over what arrives; a service sends
/// and receives here without knowing the mesh.
final class MemberLinks: Sendable {
    /// Which service a message is for: told by its JSON's top-level key (`origin`, `rollout…`, `revocations`,
    /// `configuration`).
    enum Topic: Sendable, CaseIterable {
        case origin, rollout, revocations, configuration

        init?(_ message: ByteBuffer) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: message)) as? [String: Any], object.count == 1,
                let key = object.keys.first
            else { return nil }
            if key == "origin" {
                self = .origin
            } else if key.hasPrefix("rollout") {
                self = .rollout
            } else if key == "revocations" {
                self = .revocations
            } else if key == "configuration" {
                self = .configuration
            } else {
                return nil
            }
        }
    }

    typealias Inbound = AsyncStream<(from: MemberID, message: ByteBuffer)>
    private let links = NIOLockedValueBox<[MemberID: NIOAsyncChannelOutboundWriter<ByteBuffer>]>([:])
    private let streams: [Topic: (stream: Inbound, continuation: Inbound.Continuation)]

    init() {
        var streams: [Topic: (stream: Inbound, continuation: Inbound.Continuation)] = [:]
        for topic in Topic.allCases {
            streams[topic] = Inbound.makeStream(of: (from: MemberID, message: ByteBuffer).self, bufferingPolicy: .bufferingNewest(64))
        }
        self.streams = streams
    }

    /// What members sent for `topic`, with the sender's name.
    func inbound(_ topic: Topic) -> Inbound { streams[topic]!.stream }

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
    /// A message of no known topic (a newer peer's, or garbage) is dropped.
    func received(_ message: ByteBuffer, from member: MemberID) {
        guard let topic = Topic(message) else { return }
        streams[topic]!.continuation.yield((member, message))
    }
}
