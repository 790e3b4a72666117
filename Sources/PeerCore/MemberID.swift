/// A member of the cluster, named as in its config (`node.name`) and in its mesh certificate.
public struct MemberID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var name: String
    public init(_ name: String) { self.name = name }
    public static func < (a: MemberID, b: MemberID) -> Bool { a.name < b.name }
    public var description: String { name }

    public init(from decoder: any Decoder) throws { name = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }
}
