import Foundation
import PeerDaemon
import PeerTestKit
import Testing

/// Pulls from a registry that requires a login: refused without or with wrong credentials (with a message that
/// says where credentials go), accepted with the right ones, and the secret never shows up anywhere.
@Suite(.serialized, .timeLimit(.minutes(6))) struct PrivateRegistryTests {
    let image = "\(TestBed.authRegistry)/private-app:v1"

    func node(passwordFile: String?) throws -> TestNode {
        guard let passwordFile else { return try TestNode() }
        return try TestNode(extraTop: [
            "registries:",
            "  - server: \(TestBed.authRegistry)",
            "    username: \(TestBed.authRegistryUser)",
            "    password_file: \(passwordFile)",
        ])
    }

    func secretFile(_ content: String) throws -> String {
        let path = NSTemporaryDirectory() + "peer-registry-secret-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: Data((content + "\n").utf8), attributes: [.posixPermissions: 0o600]))
        return path
    }

    @Test func withoutCredentialsThePullIsRefusedWithAHint() async throws {
        let node = try node(passwordFile: nil)
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            let record = try await deploy(engine, image)
            #expect(record.result == .failed)
            #expect(record.steps.last?.step == "pull")
            #expect(record.reason?.contains("registries[].username") == true, "\(record.reason ?? "")")
            #expect(try node.containers().isEmpty)
        }
    }

    @Test func wrongPasswordIsRefusedAndNeverEchoed() async throws {
        let secret = try secretFile("not-the-password")
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let node = try node(passwordFile: secret)
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            let record = try await deploy(engine, image)
            #expect(record.result == .failed)
            #expect(record.reason?.contains("registries[].username") == true, "\(record.reason ?? "")")
            #expect(record.reason?.contains("not-the-password") == false)
        }
    }

    @Test func rightCredentialsPullAndServe() async throws {
        let secret = try secretFile(TestBed.authRegistryPassword)
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let node = try node(passwordFile: secret)
        defer { node.tearDown() }
        try await withEngine(node) { engine async throws in
            let record = try await deploy(engine, image)
            #expect(record.result == .succeeded, "\(record.reason ?? "")")
            #expect(try await node.get("/").body == "v1")
            let state = try String(contentsOfFile: try node.config().stateDirectory + "/state.json", encoding: .utf8)
            #expect(!state.contains(TestBed.authRegistryPassword), "the secret is not persisted")
        }
    }
}
