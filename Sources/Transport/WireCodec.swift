import Foundation
import NIOCore
import NIOFoundationCompat

/// A versioned codec for one message type: one version byte, then the JSON of the message. Anything else —
/// another version, bytes that are not the message — is an error, and the connection that sent it is closed.
public struct WireCodec<Message: Codable & Sendable>: Sendable {
    public static var version: UInt8 { 1 }

    public init() {}

    public func encode(_ message: Message) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.version)
        buffer.writeBytes(try JSONEncoder().encode(message))
        return buffer
    }

    public func decode(_ frame: ByteBuffer) throws -> Message {
        var frame = frame
        guard let version = frame.readInteger(as: UInt8.self) else { throw TransportError.malformed("empty frame") }
        guard version == Self.version else { throw TransportError.unsupportedVersion(version) }
        do {
            return try JSONDecoder().decode(Message.self, from: frame)
        } catch {
            throw TransportError.malformed("\(Message.self) expected")
        }
    }
}
