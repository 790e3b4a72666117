import Control
import Deployment
import Cluster
import Foundation
import Leadership
import PeerCore
import Testing

@testable import PeerDaemon

/// Golden fixtures (`Fixtures/`), written by the peerd before the mesh became a pure ``MeshNode`` with a published
/// state: the datagrams and member messages it sent and the files it left in its state folder. A rolling upgrade
/// mixes old and new nodes in one mesh, and a new peerd starts on an old one's files: these bytes must keep their
/// meaning, and what a new node sends must be what an old one reads.
@Suite struct WireCompatibilityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    func fixture(_ name: String) throws -> Data { try Data(contentsOf: Self.fixtures.appendingPathComponent(name)) }

    /// The same JSON document (key order aside: Foundation's encoder orders keys by hash).
    func sameJSON(_ a: Data, _ b: Data) throws -> Bool {
        (try JSONSerialization.jsonObject(with: a) as? NSObject) == (try JSONSerialization.jsonObject(with: b) as? NSObject)
    }

    /// A state folder holding one fixture under the name peerd gives it.
    func stateFolder(_ fixture: String, as name: String) throws -> StateDirectory {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("peer-golden-\(UUID().uuidString)").path
        let path = folder + "/" + name
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: path, contents: try self.fixture(fixture)))
        return StateDirectory(folder)
    }

    @Test func membershipDatagramsDecodeAndEncodeAsBefore() throws {
        for (index, envelope) in GoldenValues.envelopes.enumerated() {
            let old = try fixture("datagram-swim-\(index).json")
            #expect(try JSONDecoder().decode(MeshNode.Datagram.self, from: old) == .swim(envelope))
            #expect(try sameJSON(JSONEncoder().encode(MeshNode.Datagram.swim(envelope)), old))
        }
    }

    @Test func leaseDatagramsDecodeAndEncodeAsBefore() throws {
        for (index, message) in GoldenValues.leaseMessages.enumerated() {
            let old = try fixture("datagram-lease-\(index).json")
            #expect(try JSONDecoder().decode(MeshNode.Datagram.self, from: old) == .lease(message))
            #expect(try sameJSON(JSONEncoder().encode(MeshNode.Datagram.lease(message)), old))
        }
    }

    @Test func memberAndOperatorMessagesDecodeAndEncodeAsBefore() throws {
        let origin = try fixture("member-message-origin.json")
        guard case .origin(let pair, let setAt, let authority) = try JSONDecoder().decode(OriginTLSService.MemberMessage.self, from: origin) else {
            Issue.record("not an origin message")
            return
        }
        #expect(pair == GoldenValues.originPair && setAt == GoldenValues.originSetAt && authority == nil)
        #expect(
            try sameJSON(
                JSONEncoder().encode(OriginTLSService.MemberMessage.origin(GoldenValues.originPair, setAt: GoldenValues.originSetAt)), origin))

        let deploy = try JSONDecoder().decode(OperatorRequest.self, from: try fixture("operator-request-deploy.json"))
        #expect(deploy.op == .deploy && deploy.image == "registry.example.com/shop:v2" && deploy.origin == nil)
        let tls = try JSONDecoder().decode(OperatorRequest.self, from: try fixture("operator-request-tls.json"))
        #expect(tls.op == .tlsSet && tls.origin == GoldenValues.originPair)
    }

    @Test func theStateFilesOfTheEarlierVersionAreRead() throws {
        #expect(try stateFolder("state.json", as: "state.json").read(.node) == GoldenValues.nodeState)
        #expect(try stateFolder("lease-term", as: "lease-term").promisedTerm() == 12)

        let rollout = try stateFolder("rollout.json", as: "rollout.json").read(.rollout)
        #expect(rollout?.intent == GoldenValues.intent && rollout?.report == GoldenValues.report)
        // Written before intents were acknowledged by a majority: taken as replicated, so a restart keeps it (and
        // settles the interrupted swap from what the engine serves) instead of dropping it.
        #expect(rollout?.committed == nil)
        let (node, _) = RolloutNode.restart(me: "web-2", persisted: rollout, serving: GoldenValues.intent.image)
        #expect(node.intent == GoldenValues.intent && node.report?.phase == .done)

        // The earlier version wrote this file with ISO 8601 dates and read it back expecting numbers: every restart
        // forgot the origin certificate. One store reads what it writes.
        let origin = try stateFolder("tls-origin.json", as: "tls/origin.json").read(.origin)
        #expect(origin?.info == GoldenValues.originInfo && origin?.setAt == GoldenValues.originSetAt)
    }

    @Test func everyStateFileReadsBackWhatWasWritten() throws {
        let folder = StateDirectory(FileManager.default.temporaryDirectory.appendingPathComponent("peer-state-\(UUID().uuidString)").path)
        try folder.write(GoldenValues.nodeState, to: .node)
        try folder.write(RolloutNode.Persisted(intent: GoldenValues.intent, report: GoldenValues.report), to: .rollout)
        try folder.write(OriginTLSService.Installed(info: GoldenValues.originInfo, setAt: GoldenValues.originSetAt), to: .origin)
        try folder.writePromisedTerm(Counter.limit)
        try folder.write(MeshPeers(numbering: ["n1", "n3"]), to: .meshPeers)
        #expect(try folder.read(.node) == GoldenValues.nodeState)
        #expect(try folder.read(.meshPeers) == MeshPeers(numbering: ["n1", "n3"]))
        #expect(try folder.read(.rollout)?.intent == GoldenValues.intent)
        #expect(try folder.read(.origin)?.info == GoldenValues.originInfo)
        #expect(try folder.promisedTerm() == Counter.limit)
        // Above any term a cluster reaches: a corrupt file, or one written from a hostile message: refused.
        try folder.writePromisedTerm(UInt64.max)
        #expect {
            _ = try folder.promisedTerm()
        } throws: { error in
            "\(error)".contains("lease-term") && "\(error)".contains("above any a cluster reaches")
        }
        for file in ["state.json", "rollout.json", "tls/origin.json", "lease-term", "mesh-peers.json"] {
            let mode = try FileManager.default.attributesOfItem(atPath: folder.path + "/" + file)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(file)")
        }
    }

    @Test func aCorruptFileIsRefusedWithItsPathAndTheWayOut() throws {
        let folder = try stateFolder("state.json", as: "lease-term")
        #expect {
            _ = try folder.promisedTerm()
        } throws: { error in
            "\(error)".contains(folder.path + "/lease-term") && "\(error)".contains("does not hold a lease term")
        }
        let state = try stateFolder("lease-term", as: "state.json")
        #expect {
            _ = try state.read(.node)
        } throws: { error in
            "\(error)".contains("state.json") && "\(error)".contains("move it away")
        }
    }
}

/// `peerctl`'s connection options before the subcommand, as the docs write them for CI.
@Suite struct PeerctlArgumentsTests {
    @Test func connectionOptionsBeforeTheSubcommandMoveAfterIt() {
        let remote = ["--peer", "203.0.113.10:7946", "--cert", "op.pem", "--key", "op-key.pem", "--ca=ca.pem"]
        #expect(
            PeerctlArguments.hoisted(remote + ["deploy", "shop:2", "--json"])
                == ["deploy", "shop:2", "--json", "--peer", "203.0.113.10:7946", "--cert", "op.pem", "--key", "op-key.pem", "--ca=ca.pem"])
        #expect(PeerctlArguments.hoisted(["rollout", "cancel"]) == ["rollout", "cancel"])
        #expect(
            PeerctlArguments.hoisted(["--config", "/etc/peer/peer.yml", "rollout", "cancel"]) == [
                "rollout", "cancel", "--config", "/etc/peer/peer.yml",
            ])
        // For tls set, --cert and --key are the origin pair: the operator's become --operator-cert/--operator-key.
        #expect(
            PeerctlArguments.hoisted(remote + ["tls", "set", "--cert", "origin.pem", "--key", "origin-key.pem"])
                == [
                    "tls", "set", "--cert", "origin.pem", "--key", "origin-key.pem", "--peer", "203.0.113.10:7946", "--operator-cert", "op.pem",
                    "--operator-key", "op-key.pem", "--ca=ca.pem",
                ])
        // Nothing to move, or a value missing: left to the parser.
        #expect(PeerctlArguments.hoisted(["deploy", "--peer", "h:1"]) == ["deploy", "--peer", "h:1"])
        #expect(PeerctlArguments.hoisted(["--peer"]) == ["--peer"])
    }
}
