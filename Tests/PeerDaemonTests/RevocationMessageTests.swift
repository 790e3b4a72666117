import Foundation
import PKI
import Testing

@testable import PeerDaemon

/// A rolling upgrade mixes peerd versions: an entry of a kind a newer peerd adds must not make an older one drop a
/// member's whole list, nor refuse to start on a `revoked.json` the newer one wrote.
@Suite struct RevocationMessageTests {
    @Test func anEntryOfAnUnknownKindIsLeftOutNotTheWholeList() throws {
        let ca = try ClusterCA.create(cluster: "prod")
        let known = try ca.revoke(.node("web-3"))
        var entry = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(known)) as? [String: Any])
        entry["role"] = "group"
        let entries: [Any] = [entry, try JSONSerialization.jsonObject(with: JSONEncoder().encode(known))]
        let message = try JSONSerialization.data(withJSONObject: ["revocations": entries])
        #expect(try JSONDecoder().decode(RevocationService.MemberMessage.self, from: message).revocations == [known])
        let stored = try JSONDecoder().decode([RevocationService.Stored].self, from: try JSONSerialization.data(withJSONObject: entries))
        #expect(stored.compactMap(\.revocation) == [known])
        // What this peerd writes reads back whole.
        let written = try JSONEncoder().encode([RevocationService.Stored(known)])
        #expect(try JSONDecoder().decode([RevocationService.Stored].self, from: written).compactMap(\.revocation) == [known])
    }
}
