import Foundation
import PKI
import PeerConfiguration
import PeerTestKit
import Testing

/// `peerctl ca init` / `cert issue` / `cert issue-operator` as an operator runs them, checked with openssl.
@Suite(.timeLimit(.minutes(6))) struct PKICommandTests {
    func peerctl(_ arguments: [String]) throws -> Shell.Result {
        try Shell.run(PeerdProcess.binDirectory + "/peerctl", arguments)
    }

    func mode(_ path: String) throws -> Int? {
        try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
    }

    @Test func createsACAAndIssuesCertificatesWithPrivateKeys() throws {
        let dir = NSTemporaryDirectory() + "peer-pki-\(UUID().uuidString)/pki"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }

        let missing = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(missing.status == 1)
        #expect(missing.output.contains("peerctl ca init --dir \(dir)"))

        let initialized = try peerctl(["ca", "init", "--dir", dir, "--cluster", "test"])
        #expect(initialized.status == 0, "\(initialized.output)")
        #expect(try mode(dir) == 0o700)
        #expect(try mode(dir + "/ca-key.pem") == 0o600)
        #expect(try mode(dir + "/ca.pem") == 0o644)
        let again = try peerctl(["ca", "init", "--dir", dir])
        #expect(again.status == 1)
        #expect(again.output.contains("already holds a CA"))

        let node = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(node.status == 0, "\(node.output)")
        #expect(try mode(dir + "/web-1-key.pem") == 0o600)
        let verified = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslserver", dir + "/web-1.pem"])
        #expect(verified.status == 0, "\(verified.output)")
        let text = try Shell.run("openssl", ["x509", "-noout", "-text", "-in", dir + "/web-1.pem"]).output
        #expect(text.contains("IP Address:127.0.0.2"))
        #expect(text.contains("DNS:web-1"))
        #expect(text.contains("OU = peer-node") || text.contains("OU=peer-node"))

        let duplicate = try peerctl(["cert", "issue", "web-1", "--address", "127.0.0.2", "--dir", dir])
        #expect(duplicate.status == 1)
        #expect(duplicate.output.contains("--force"))

        let op = try peerctl(["cert", "issue-operator", "ci", "--dir", dir])
        #expect(op.status == 0, "\(op.output)")
        let client = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslclient", dir + "/operator-ci.pem"])
        #expect(client.status == 0, "\(client.output)")
        let server = try Shell.run("openssl", ["verify", "-CAfile", dir + "/ca.pem", "-purpose", "sslserver", dir + "/operator-ci.pem"])
        #expect(server.status != 0, "an operator certificate must not serve")

        for output in [initialized.output, node.output, op.output] {
            #expect(!output.contains("PRIVATE KEY"), "keys are never printed")
        }

        let badAddress = try peerctl(["cert", "issue", "web-2", "--address", "example.com", "--dir", dir])
        #expect(badAddress.status == 1)
        #expect(badAddress.output.contains("is not an IPv4 or IPv6 address"))
    }

    /// `peerctl init` with only the required options writes a config that passes `config check`.
    @Test func initWithItsDefaultsPassesConfigCheck() throws {
        let dir = NSTemporaryDirectory() + "peer-init-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = try peerctl(["init", "--name", "web-1", "--address", "203.0.113.10", "--dir", dir])
        #expect(made.status == 0, "\(made.output)")
        let check = try peerctl(["config", "check", "--config", dir + "/peer.yml"])
        #expect(check.status == 0, "\(check.output)")
    }

    /// `peerctl init` on the first VPS, `peerctl node add` there, `peerctl join` on the second: both configs pass
    /// `config check`, list both members, and the second node's certificate chains to the first node's CA.
    @Test func initNodeAddAndJoinSetUpASecondNode() throws {
        let base = NSTemporaryDirectory() + "peer-join-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: base) }
        let first = base + "/first/etc/peer"
        let init1 = try peerctl([
            "init", "--name", "web-1", "--address", "203.0.113.10", "--mesh-address", "10.0.0.5", "--app", "shop", "--server-name",
            "shop.example.com", "--dir", first,
        ])
        #expect(init1.status == 0, "\(init1.output)")
        #expect(try mode(first + "/peer.yml") == 0o600)
        #expect(try mode(first + "/pki/ca-key.pem") == 0o600)
        #expect(try mode(first + "/pki/web-1-key.pem") == 0o600)
        let check1 = try peerctl(["config", "check", "--config", first + "/peer.yml"])
        #expect(check1.status == 0, "\(check1.output)")
        #expect(try peerctl(["init", "--name", "web-1", "--address", "203.0.113.10", "--dir", first]).output.contains("already exists"))

        // A secret file the config names travels with the join file, and so does the app's environment file.
        try "cf-token-abc".write(toFile: first + "/cloudflare-token", atomically: true, encoding: .utf8)
        chmod(first + "/cloudflare-token", 0o600)
        try "DATABASE_URL=postgres://shop\n".write(toFile: first + "/app.env", atomically: true, encoding: .utf8)
        chmod(first + "/app.env", 0o600)
        var config = try String(contentsOfFile: first + "/peer.yml", encoding: .utf8)
        config = config.replacingOccurrences(of: "app:\n  name: shop\n", with: "app:\n  name: shop\n  env_file: \(first)/app.env\n")
        // The dns: section init wrote as a comment, filled in (its zone id too).
        for key in ["dns:", "  zone:", "  zone_id:", "  name: shop", "  token_file:"] {
            config = config.replacingOccurrences(of: "# " + key, with: key)
        }
        #expect(config.contains("\ndns:\n  zone: example.com\n  zone_id: 0123456789abcdef0123456789abcdef"), "\(config)")
        try config.write(toFile: first + "/peer.yml", atomically: true, encoding: .utf8)
        #expect(try peerctl(["config", "check", "--config", first + "/peer.yml"]).status == 0)

        let bundle = base + "/web-2.peer-join"
        let add = try peerctl([
            "node", "add", "web-2", "--address", "203.0.113.11", "--mesh-address", "10.0.0.6", "--config", first + "/peer.yml", "--out", bundle,
        ])
        #expect(add.status == 0, "\(add.output)")
        #expect(add.output.contains("- name: web-2") && add.output.contains("address: 10.0.0.6:7946"), "\(add.output)")
        #expect(add.output.contains("public_address: 203.0.113.11"), "the member line carries its DNS address: \(add.output)")
        #expect(try mode(bundle) == 0o600)
        #expect(!add.output.contains("PRIVATE KEY") && !add.output.contains("cf-token-abc"))
        #expect(
            try peerctl(["node", "add", "web-1", "--address", "203.0.113.12", "--config", first + "/peer.yml", "--out", base + "/x"]).output.contains(
                "already in mesh.members"))

        // On the second VPS (here: under its own root folder), with the check node add printed.
        let check = try #require(add.output.split(separator: " ").drop { $0 != "--sha256" }.dropFirst().first.map { String($0.prefix(20)) })
        let second = base + "/second"
        #expect(try peerctl(["join", bundle, "--root", second]).output.contains("is not checked"))
        let wrong = try peerctl(["join", bundle, "--root", second, "--sha256", String(check.reversed())])
        #expect(wrong.status != 0 && wrong.output.contains("is not the file peerctl node add wrote"), "\(wrong.output)")
        #expect(!FileManager.default.fileExists(atPath: second), "nothing written before the check")
        let join = try peerctl(["join", bundle, "--root", second, "--sha256", check])
        #expect(join.status == 0, "\(join.output)")
        let joined = second + first  // the same paths as on the first node, under the second's root
        #expect(try mode(joined + "/pki/web-2-key.pem") == 0o600)
        #expect(try mode(joined + "/cloudflare-token") == 0o600)
        #expect(try mode(joined + "/app.env") == 0o600)
        #expect(try String(contentsOfFile: joined + "/app.env", encoding: .utf8) == "DATABASE_URL=postgres://shop\n")
        #expect(try mode(joined + "/peer.yml") == 0o600)
        let text = try String(contentsOfFile: joined + "/peer.yml", encoding: .utf8)
        // Its config names files at their real paths (/etc/peer/… on a VPS); check it where they are.
        let local = text.replacingOccurrences(of: first, with: joined)
        try local.write(toFile: joined + "/peer.yml", atomically: true, encoding: .utf8)
        let check2 = try peerctl(["config", "check", "--config", joined + "/peer.yml"])
        #expect(check2.status == 0, "\(check2.output)")
        #expect(text.contains("name: web-2") && text.contains("address: 203.0.113.11") && text.contains("listen: 10.0.0.6:7946"), "\(text)")
        #expect(text.contains("name: web-1") && text.contains("address: 10.0.0.5:7946"), "both members: \(text)")
        #expect(text.contains("public_address: 203.0.113.10") && text.contains("public_address: 203.0.113.11"), "\(text)")
        #expect(text.contains("name: shop.example.com"), "the cluster's sections stay: \(text)")
        let verify = try Shell.run("openssl", ["verify", "-CAfile", first + "/pki/ca.pem", joined + "/pki/web-2.pem"])
        #expect(verify.status == 0, "\(verify.output)")
        #expect(try peerctl(["join", bundle, "--root", second, "--sha256", check]).output.contains("already exists"))

        // A join file that would write elsewhere than its config names, or climb out of --root, is refused whole,
        // even with a check that matches it (someone who made it could print one too).
        var original = try JSONDecoder().decode(ClusterSetup.Bundle.self, from: Data(contentsOf: URL(fileURLWithPath: bundle)))
        for (path, why) in [("/root/.ssh/authorized_keys", "its config names neither"), (first + "/../../../../tmp/x", "without . or ..")] {
            original.files[path] = "ssh-ed25519 AAAA attacker"
            let forged = base + "/forged.peer-join"
            let bytes = Array(try JSONEncoder().encode(original))
            try Data(bytes).write(to: URL(fileURLWithPath: forged))
            let third = base + "/third"
            let refused = try peerctl(["join", forged, "--root", third, "--sha256", String(sha256Hex(bytes).prefix(20))])
            #expect(refused.status != 0 && refused.output.contains(why), "\(refused.output)")
            #expect(!FileManager.default.fileExists(atPath: third), "nothing written: \(path)")
            original.files[path] = nil
        }
        // A join file whose own config names a file outside its folder (here as the app's env_file, in cron's
        // folder): refused unless the operator allows that path by name.
        let configPath = first + "/peer.yml"
        let named = try #require(original.files[configPath])
        original.files[configPath] = named.replacingOccurrences(of: "env_file: \(first)/app.env", with: "env_file: /etc/cron.d/peer-evil")
        original.files[first + "/app.env"] = nil
        original.files["/etc/cron.d/peer-evil"] = "* * * * * root touch /tmp/owned\n"
        let forged = base + "/outside.peer-join"
        let bytes = Array(try JSONEncoder().encode(original))
        try Data(bytes).write(to: URL(fileURLWithPath: forged))
        let forgedCheck = String(sha256Hex(bytes).prefix(20))
        let outside = try peerctl(["join", forged, "--root", base + "/fourth", "--sha256", forgedCheck])
        #expect(outside.status != 0 && outside.output.contains("outside the config's folder"), "\(outside.output)")
        #expect(!FileManager.default.fileExists(atPath: base + "/fourth"))
        let allowed = try peerctl(["join", forged, "--root", base + "/fourth", "--sha256", forgedCheck, "--allow", "/etc/cron.d/peer-evil"])
        #expect(allowed.status == 0, "named by the operator: \(allowed.output)")
        #expect(FileManager.default.fileExists(atPath: base + "/fourth/etc/cron.d/peer-evil"))

        // --root confines everything: a symbolic link under it that points out (a prepared image whose folder is a
        // link to the host's) is not followed, nor is a link where a file goes.
        let outsideRoot = base + "/host"
        try FileManager.default.createDirectory(atPath: outsideRoot, withIntermediateDirectories: true)
        let fifth = base + "/fifth"
        let firstTop = "/" + first.split(separator: "/").first!
        try FileManager.default.createDirectory(atPath: fifth, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fifth + firstTop, withDestinationPath: outsideRoot)
        let escaped = try peerctl(["join", bundle, "--root", fifth, "--sha256", check])
        #expect(escaped.status != 0 && escaped.output.contains("leads out of --root"), "\(escaped.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outsideRoot).isEmpty, "written through the link")
        let sixth = base + "/sixth"
        try FileManager.default.createDirectory(atPath: sixth + first + "/pki", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: sixth + first + "/pki/web-2-key.pem", withDestinationPath: outsideRoot + "/stolen")
        let linked = try peerctl(["join", bundle, "--root", sixth, "--sha256", check])
        #expect(linked.status != 0 && linked.output.contains("is a symbolic link"), "\(linked.output)")
        #expect(!FileManager.default.fileExists(atPath: outsideRoot + "/stolen"))
    }
}
