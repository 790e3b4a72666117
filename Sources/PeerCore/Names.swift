#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The one rule for node and app names (config keys, container names, certificate subjects):
/// 1–63 lowercase ASCII letters, digits or '-', starting with a letter or digit.
public func isValidPeerName(_ s: String) -> Bool {
    guard (1...63).contains(s.count), let first = s.first, first.isASCII, first.isLetter || first.isNumber else { return false }
    return s.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
}

/// The network-order bytes of an IPv4 (4 bytes) or IPv6 (16 bytes) literal, or nil for anything else.
public func ipAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

/// An IP address literal in the one form DNS providers list it (for IPv6 RFC 5952's: lower case, leading zeros
/// dropped, the longest run of zero groups as `::`), so that `2001:DB8:0:0::1` in a config and `2001:db8::1` at
/// Cloudflare are one address. Anything that is not an address literal comes back unchanged.
public func canonicalIPAddress(_ text: String) -> String {
    guard let bytes = ipAddressBytes(text) else { return text }
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    let written = inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, bytes, &buffer, socklen_t(buffer.count))
    guard written != nil else { return text }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A network in CIDR notation — `192.0.2.0/24`, `2001:db8::/32`, or one address (`198.51.100.7`: all its bits) —
/// that an address is matched against. Bits past the prefix length may be set (`192.0.2.7/24` is `192.0.2.0/24`).
public struct NetworkPrefix: Sendable, Hashable, CustomStringConvertible {
    /// The network's address, network-order bytes (4 or 16), bits past `length` cleared.
    public let bytes: [UInt8]
    public let length: Int

    /// nil for anything that is not an IPv4 or IPv6 literal with an optional `/LENGTH` in range.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = ipAddressBytes(String(parts[0])) else { return nil }
        let maximum = address.count * 8
        let length: Int
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...maximum).contains(given), parts[1].allSatisfy(\.isNumber) else { return nil }
            length = given
        } else {
            length = maximum
        }
        self.length = length
        bytes = address.enumerated().map { index, byte in
            let kept = max(0, min(8, length - index * 8))
            return kept == 0 ? 0 : byte & UInt8(truncatingIfNeeded: 0xFF << (8 - kept))
        }
    }

    /// Whether the address literal `address` is in this network (an IPv4 address is not in an IPv6 network, nor
    /// the other way round; an IPv4-mapped IPv6 address counts as the IPv4 one).
    public func contains(_ address: String) -> Bool {
        guard var other = ipAddressBytes(address) else { return false }
        if other.count == 16, bytes.count == 4, other.prefix(12) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] { other = Array(other.suffix(4)) }
        guard other.count == bytes.count else { return false }
        for index in 0..<bytes.count {
            let kept = max(0, min(8, length - index * 8))
            guard kept > 0 else { return true }
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - kept))
            if other[index] & mask != bytes[index] { return false }
        }
        return true
    }

    public var description: String { "\(canonicalIPAddress(ipText))/\(length)" }

    private var ipText: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(bytes.count == 4 ? AF_INET : AF_INET6, bytes, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
