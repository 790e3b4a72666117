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
