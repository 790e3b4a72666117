import ArgumentParser
import Foundation
import Control
import Deployment
import PeerConfiguration

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Deploy an image: on a mesh, rolled across the nodes one at a time (stopped and rolled back at the first failure); alone, on this node: pull, start, health-check, switch nginx, drain, stop the old one.",
        discussion: """
            On a mesh the request goes to the leader, which refuses it while another rollout runs and accepts it \
            once a majority of the app nodes has persisted it. peerctl then follows the rollout and succeeds only \
            if the rollout that finished is the one it submitted.

            Exit codes: 0 succeeded (every node serves the image); 1 failed, cancelled or replaced (the nodes it \
            reached were rolled back); 3 refused (another rollout runs, not replicated, nothing to roll back to); \
            4 not reachable (peerd, or the cluster's leader; or the stream dropped: re-attach with \
            peerctl deploy --follow ID); 64 usage (a bad argument or image name).
            """
    )

    @OptionGroup var connection: Connection

    @Argument(help: "The image, e.g. ghcr.io/acme/shop:1.4.2; with --follow, the rollout's id (default: the current one).")
    var image: String?

    @Flag(help: "Re-attach to a running rollout (after --detach, or a CI job whose connection dropped) and wait for its result.")
    var follow = false

    @Flag(help: "Print the event stream as JSON lines.")
    var json = false

    @Flag(help: "Return once the deploy is accepted (replicated to a majority); follow it with peerctl deploy --follow ID.")
    var detach = false

    func validate() throws {
        if !follow, image == nil { throw ValidationError("missing the image to deploy, e.g. peerctl deploy ghcr.io/acme/shop:1.4.2") }
        if follow, detach { throw ValidationError("--follow and --detach do not go together") }
    }

    func run() async throws {
        if follow {
            try await stream(connection: connection, json: json) { client, onEvent in try await client.follow(id: image, onEvent: onEvent) }
        } else {
            try await stream(connection: connection, json: json, detach: detach) { client, onEvent in
                try await client.deploy(image: image, onEvent: onEvent)
            }
        }
    }
}

struct Rollback: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Swap back (on a mesh: the whole cluster) to the image that served before the current one.",
        discussion: "Exit codes as for peerctl deploy.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print the event stream as JSON lines.")
    var json = false

    func run() async throws {
        try await stream(connection: connection, json: json) { client, onEvent in try await client.deploy(image: nil, onEvent: onEvent) }
    }
}

struct RolloutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout", abstract: "Cluster rollouts: cancel one.", subcommands: [Cancel.self])

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop the running rollout: the nodes it reached go back to the previous image; peerctl deploy --follow shows them going.",
            discussion: "Exit codes: 0 cancelled; 3 refused (nothing runs, or ID is not the current rollout); 4 not reachable.")

        @OptionGroup var connection: Connection

        @Argument(help: "The rollout's id (default: the current one); refused if another one runs.")
        var id: String?

        func run() async throws {
            do {
                let cancelled = try await connection.withClient { try await $0.cancel(id: id) }
                print("rollout \(cancelled.id) cancelled: the nodes it reached go back; peerctl deploy --follow \(cancelled.id) shows them")
            } catch {
                throw fail(error)
            }
        }
    }
}

/// peerctl's exit codes (documented in the README and `peerctl deploy --help`).
enum Exit {
    static let failed = ExitCode(1)
    static let refused = ExitCode(3)
    static let unreachable = ExitCode(4)
    /// EX_USAGE, as ArgumentParser's own validation errors.
    static let usage = ExitCode(64)
}

/// Prints each step as it happens and exits 0 only if the deploy it started (or follows) succeeded.
func stream(
    connection: Connection, json: Bool, detach: Bool = false,
    _ start: (any ControlChannel, (ControlAPI.Event) -> Void) async throws -> Void
) async throws {
    var result: DeployRecord?
    var submitted: String?
    var finished: ControlAPI.Event?
    do {
        try await connection.withClient { client in
            try await start(client) { event in
                if json {
                    print(String(decoding: (try? ControlAPI.encoder.encode(event)) ?? Data(), as: UTF8.self))
                } else {
                    render(event)
                }
                fflush(nil)  // each line as it happens, also into a pipe or a CI log
                if let record = event.record, event.type == .result { result = record }
                if event.type == .accepted || event.type == .following { submitted = event.id }
                if detach, event.type == .accepted {
                    if !json { print("detached: the deploy goes on in the cluster; peerctl deploy --follow \(event.id ?? "") waits for it") }
                    Foundation.exit(0)
                }
                if event.type == .rollout { finished = event }
            }
        }
    } catch let failure as ControlClient.Failure {
        throw fail(failure)
    } catch let usage as ValidationError {
        throw fail(usage)
    } catch {
        // The stream broke (peerd restarted, the connection reset): the rollout goes on in the cluster.
        let again = submitted.map { "; it goes on in the cluster: re-attach with peerctl deploy --follow \($0)" } ?? ""
        throw fail("the connection to peerd broke (\(error))\(again)", code: Exit.unreachable)
    }
    if let finished {
        // Only the rollout this command submitted counts.
        guard let submitted, finished.id == submitted else {
            throw fail("rollout \(finished.id ?? "?") ended, not \(submitted ?? "the one submitted")", code: Exit.failed)
        }
        if finished.succeeded != true { throw Exit.failed }
        return
    }
    if let result {
        if result.result != .succeeded { throw Exit.failed }
        return
    }
    let again = submitted.map { "; re-attach with peerctl deploy --follow \($0)" } ?? ""
    throw fail("peerd closed the stream before the deploy ended\(again); see peerctl status", code: Exit.unreachable)
}

/// Prints the error and gives the exit code for its kind.
func fail(_ error: any Error) -> ExitCode {
    if let usage = error as? ValidationError { return fail(usage.message, code: Exit.usage) }
    guard let failure = error as? ControlClient.Failure else { return fail("\(error)") }
    let code: ExitCode =
        switch failure.kind {
        case .unreachable: Exit.unreachable
        case .refused, .notFound: Exit.refused
        case .badRequest: Exit.usage
        case .other: Exit.failed
        }
    return fail(failure.description, code: code)
}

private func render(_ event: ControlAPI.Event) {
    switch event.type {
    case .accepted:
        print("deploy \(event.id ?? "?") accepted: \(event.image ?? "?")\(event.reason.map { " (\($0))" } ?? "")")
    case .following:
        print("following rollout \(event.id ?? "?") of \(event.image ?? "?")")
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
            print("rollout \(event.id ?? "?") FAILED: \(event.reason ?? "?"); the nodes it reached were rolled back")
        }
    }
}
