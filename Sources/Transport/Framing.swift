import NIOCore

/// Frames on the mesh: a 4-byte big-endian length, then that many bytes. A frame over the limit closes the
/// connection before any of it is buffered.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer
    public let maximumFrameSize: Int

    public init(maximumFrameSize: Int) { self.maximumFrameSize = maximumFrameSize }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maximumFrameSize else { throw TransportError.frameTooLarge(Int(length), limit: maximumFrameSize) }
        guard buffer.readableBytes >= 4 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = ByteBuffer

    public init() {}

    public func encode(data: ByteBuffer, out: inout ByteBuffer) throws {
        out.writeInteger(UInt32(data.readableBytes))
        out.writeImmutableBuffer(data)
    }
}

public enum TransportError: Error, CustomStringConvertible, Sendable {
    case frameTooLarge(Int, limit: Int)
    case unsupportedVersion(UInt8)
    case malformed(String)

    public var description: String {
        switch self {
        case .frameTooLarge(let size, let limit): "frame of \(size) bytes is over the \(limit)-byte limit"
        case .unsupportedVersion(let v): "message version \(v) is not supported"
        case .malformed(let why): "malformed message: \(why)"
        }
    }
}
