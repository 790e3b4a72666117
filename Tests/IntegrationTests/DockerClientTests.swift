@testable import Docker
import Deployment
import Foundation
import PeerTestKit
import Testing

@Suite(.serialized, .timeLimit(.minutes(6))) struct DockerClientTests {
    @Test func negotiatesAnAPIVersionTheEngineAccepts() async throws {
        try await TestBed.require()
        let docker = DockerClient(http: TestBed.http)
        let version = try await docker.ping()
        #expect(version >= DockerClient.oldestSupportedAPIVersion)
        #expect(version <= DockerClient.newestKnownAPIVersion)
        // The engine here (20.10) speaks 1.41 at most: a hard-coded newer prefix would have been refused.
        let daemonMax = try Shell.run("curl", ["-s", "--unix-socket", TestBed.dockerSocket, "http://docker/version"]).output
        let max = try #require((try JSONSerialization.jsonObject(with: Data(daemonMax.utf8)) as? [String: Any])?["ApiVersion"] as? String)
        #expect(version == min(DockerClient.APIVersion(max)!, DockerClient.newestKnownAPIVersion))
    }

    @Test func listsOnlyTheContainersWithAllOfPeersLabels() async throws {
        try await TestBed.require()
        let docker = DockerClient(http: TestBed.http)
        let node = "t-list-\(UInt32.random(in: 0...UInt32.max))"
        let labels = [PeerLabels.managed: "true", PeerLabels.node: node, PeerLabels.app: "testapp"]
        try await docker.pull(TestBed.image("v1"))
        var spec = ContainerSpec(name: "peer-\(node)-testapp-1", image: TestBed.image("v1"), generation: 1, containerPort: 8080)
        spec.labels = labels.merging([PeerLabels.generation: "1", PeerLabels.image: TestBed.image("v1")]) { $1 }
        defer {
            // Whatever happens above, nothing of this test stays behind.
            let ids = (try? Shell.run("docker", ["ps", "-aq", "--filter", "label=\(PeerLabels.node)=\(node)"]).output) ?? ""
            let list = ids.split(separator: "\n").map(String.init)
            if !list.isEmpty { _ = try? Shell.run("docker", ["rm", "-f"] + list) }
        }
        let instance = try await docker.start(spec)
        var other = spec
        other.name = "peer-\(node)-otherapp-1"
        other.labels[PeerLabels.app] = "otherapp"
        let unrelated = try await docker.start(other)

        let found = try await docker.managedContainers(labels: labels)
        #expect(found.map(\.id) == [instance.containerID])
        #expect(found.first?.hostPort == instance.hostPort)
        #expect(found.first?.generation == 1)
        #expect(try await TestBed.get("http://127.0.0.1:\(instance.hostPort)/").body == "v1")

        try await docker.stopAndRemove(unrelated.containerID, grace: .zero)
        // Idempotent: a container that is already gone is not an error.
        try await docker.stopAndRemove(unrelated.containerID, grace: .zero)
        try await docker.stopAndRemove(instance.containerID, grace: .zero)
        #expect(try await docker.managedContainers(labels: labels).isEmpty)
    }

    @Test func logFramesAreDemultiplexed() {
        func frame(_ stream: UInt8, _ text: String) -> [UInt8] {
            let bytes = Array(text.utf8)
            let n = UInt32(bytes.count)
            return [stream, 0, 0, 0, UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + bytes
        }
        #expect(DockerClient.demultiplex(frame(1, "hello\n") + frame(2, "oops\n")) == "hello\noops\n")
        #expect(DockerClient.demultiplex(Array("plain tty output".utf8)) == "plain tty output")
    }

    @Test func registryAuthIsBase64URL() {
        #expect(DockerClient.base64URL(Data([0xfb, 0xff, 0xfe])) == "-__-")
    }
}
