import ArgumentParser
import Foundation
import Control
import Deployment
import PeerConfiguration

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Deploy an image: on a mesh, rolled across the nodes one at a time (stopped and rolled back at the first failure); alone, on this node: pull, start, health-check, switch nginx, drain, stop the old one."
    )

    @OptionGroup var connection: Connection

    @Argument(help: "The image, e.g. ghcr.io/acme/shop:1.4.2")
    var image: String

    @Flag(help: "Print the event stream as JSON lines.")
    var json = false

    @Flag(help: "Return once the deploy is accepted (replicated to the cluster); follow it with peerctl status.")
    var detach = false

    func run() async throws {
        try await stream(connection: connection, image: image, json: json, detach: detach)
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Swap back (on a mesh: the whole cluster) to the image that served before the current one.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print the event stream as JSON lines.")
    var json = false

    func run() async throws {
        try await stream(connection: connection, image: nil, json: json)
    }
}

/// Prints each step as it happens and exits non-zero unless the deploy succeeded.
func stream(connection: Connection, image: String?, json: Bool, detach: Bool = false) async throws {
    var result: DeployRecord?
    var rollout: Bool?
    do {
        try await connection.withClient { client in
            try await client.deploy(image: image) { event in
                if json {
                    print(String(decoding: (try? ControlAPI.encoder.encode(event)) ?? Data(), as: UTF8.self))
                } else {
                    render(event)
                }
                fflush(nil)  // each line as it happens, also into a pipe or a CI log
                if let record = event.record, event.type == .result { result = record }
                if detach, event.type == .accepted {
                    if !json { print("detached: the deploy goes on in peerd; peerctl status shows how it goes") }
                    Foundation.exit(0)
                }
                if event.type == .rollout { rollout = event.succeeded ?? false }
            }
        }
    } catch {
        throw fail("\(error)")
    }
    if let rollout {
        if !rollout { throw ExitCode.failure }
        return
    }
    guard let result else { throw fail("peerd closed the stream before the deploy ended; see peerctl status") }
    if result.result != .succeeded { throw ExitCode.failure }
}

private func render(_ event: ControlAPI.Event) {
    switch event.type {
    case .accepted:
        print("deploy \(event.id ?? "?") accepted: \(event.image ?? "?")\(event.reason.map { " (\($0))" } ?? "")")
    case .progress:
        guard let p = event.progress else { return }
        let clock = String(format: "%7.3fs", Double(p.totalMs) / 1000)
        let step = p.step.padding(toLength: 7, withPad: " ", startingAt: 0)
        switch p.status {
        case "started": print("[\(clock)] \(step) …  \(p.detail)")
        case "done": print("[\(clock)] \(step) ok \(p.detail) (\(p.elapsedMs) ms)")
        case "warning": print("[\(clock)] \(step) !! \(p.detail)")
        default: print("[\(clock)] \(step) FAILED \(p.detail)")
        }
    case .result:
        guard let r = event.record else { return }
        if r.result == .succeeded {
            let serving = r.servingAfterMs.map { " (serving after \(String(format: "%.3f", Double($0) / 1000))s)" } ?? ""
            print(
                "\(r.kind.rawValue) \(r.id) succeeded: \(r.image) serves\(serving), done in \(String(format: "%.3f", Double(r.durationMs) / 1000))s")
        } else {
            print("\(r.kind.rawValue) \(r.id) FAILED: \(r.reason ?? "unknown reason")")
            if let evidence = r.evidence, !evidence.isEmpty {
                print(evidence.split(separator: "\n").map { "    \($0)" }.joined(separator: "\n"))
            }
            if let previous = r.previousImage { print("\(previous) keeps serving.") }
        }
        for warning in r.warnings { print("warning: \(warning)") }
    case .node:
        print("  \(event.node ?? "?"): \(event.phase ?? "?")\(event.reason.map { " — \($0)" } ?? "")")
    case .rollout:
        if event.succeeded == true {
            print("rollout \(event.id ?? "?") succeeded: every node serves \(event.image ?? "?")")
        } else {
            print("rollout \(event.id ?? "?") FAILED at \(event.reason ?? "?"); the nodes it reached were rolled back")
        }
    }
}
