import ArgumentParser
import Foundation
import Control
import Deployment
import PeerConfiguration

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what this node serves and how its last deploy went.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let status: ControlAPI.NodeStatus
        do {
            status = try await connection.withClient { try await $0.status() }
        } catch {
            throw fail(error)
        }
        if json { return try printJSON(status) }
        var rows: [(String, String)] = [
            ("node", "\(status.node) (\(status.address))"),
            ("app", status.app),
            (
                "serving",
                status.serving.map { "\($0.image)  generation \($0.generation), \($0.containerName), 127.0.0.1:\($0.hostPort)" } ?? "nothing"
            ),
        ]
        if let since = status.servingSince { rows.append(("since", since.iso8601)) }
        rows.append(("previous", status.previousImage ?? "none"))
        if let d = status.deploying { rows.append(("deploying", "\(d.image) (deploy \(d.id))")) }
        if let last = status.lastDeploy {
            rows.append(
                ("last deploy", "\(last.kind.rawValue) \(last.id) \(last.image): \(last.result.rawValue)\(last.reason.map { " — \($0)" } ?? "")"))
        }
        if let starting = status.starting { rows.append(("starting", starting)) }
        rows.append(
            (
                "nginx",
                "\(status.nginx.running ? "running" : "NOT RUNNING"), \(status.nginx.site), listen \(status.nginx.listen), routes to generation \(status.nginx.routedGeneration.map(String.init) ?? "none")"
            ))
        rows.append(
            ("docker", status.docker.reachable ? "reachable (API \(status.docker.apiVersion ?? "?"))" : "UNREACHABLE: \(status.docker.error ?? "")"))
        if let tls = status.originCertificate {
            let warning = tls.daysLeft <= 30 ? "  RENEW SOON" : ""
            rows.append(
                (
                    "origin tls",
                    "\(tls.names.joined(separator: ", ")) on \(tls.listen), expires \(tls.notValidAfter.iso8601) (\(tls.daysLeft) days left\(warning)), AOP \(tls.originPulls), sha256 \(tls.fingerprint.prefix(16))…"
                ))
        } else {
            rows.append(("origin tls", "none (HTTP only; install one with peerctl tls set)"))
        }
        rows.append(("peerd", "\(status.peerd.version), pid \(status.peerd.pid), \(status.peerd.rssBytes / (1 << 20)) MiB resident"))
        let width = rows.map(\.0.count).max() ?? 0
        for (key, value) in rows { print("\(key.padding(toLength: width, withPad: " ", startingAt: 0))  \(value)") }
        // On a mesh: every node's version and the rollout.
        guard let members = try? await connection.withClient({ try await $0.members() }) else { return }
        print("")
        if let r = members.rollout {
            print(
                "rollout \(r.id): \(r.kind) \(r.image) (previous \(r.previousImage ?? "none"), requested by \(r.requestedBy)): \(r.outcome)\(r.failure.map { " — \($0)" } ?? "")"
            )
        }
        var table = [["NODE", "STATE", "APP", "IMAGE", "ROLLOUT", "ORIGIN TLS"]]
        for m in members.members where m.appHealthy != nil || m.image != nil || m.rolloutPhase != nil || !m.isSelf {
            table.append([
                m.name + (m.isSelf ? " (this node)" : ""), m.status, m.appHealthy.map { $0 ? "healthy" : "UNHEALTHY" } ?? "-", m.image ?? "-",
                m.rolloutPhase ?? "-", m.originFingerprint ?? "-",
            ])
        }
        printTable(table)
        for line in Self.disagreements(members) { print(line) }
    }

    /// Members that run another member list, or do not hold this node's revocations yet (live ones: a dead member
    /// says nothing new).
    static func disagreements(_ members: ControlAPI.Members) -> [String] {
        guard let me = members.members.first(where: \.isSelf) else { return [] }
        let others = members.members.filter { !$0.isSelf && $0.status != "dead" }
        var lines: [String] = []
        // File lists (digests) while the cluster runs its first configuration; `epoch-N` once it changed its own.
        func isEpoch(_ configuration: String?) -> Bool { configuration?.hasPrefix("epoch-") ?? false }
        let lists = others.filter {
            $0.configuration != nil && me.configuration != nil && $0.configuration != me.configuration && !isEpoch($0.configuration)
                && !isEpoch(me.configuration)
        }.map(\.name)
        if !lists.isEmpty {
            lines.append(
                "DIFFERENT mesh.members on \(lists.joined(separator: ", ")): no leader until every node lists the same members (peerctl who)")
        }
        let epochs = others.filter { isEpoch(me.configuration) && $0.configuration != me.configuration }
        if !epochs.isEmpty {
            lines.append(
                "on another configuration: \(epochs.map { "\($0.name) (\($0.configuration ?? "?"))" }.joined(separator: ", ")), this node \(me.configuration ?? "?") (a change is being taken; peerctl config show)"
            )
        }
        let revocations = others.filter { $0.revocations != me.revocations }.map(\.name)
        if me.revocations != nil, !revocations.isEmpty {
            lines.append("revocations not yet held by \(revocations.joined(separator: ", ")) (they get them from any member within seconds)")
        }
        return lines
    }
}

struct Deploys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List this node's deploys, newest last.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let history: [DeployRecord]
        do {
            history = try await connection.withClient { try await $0.history() }
        } catch {
            throw fail(error)
        }
        if json { return try printJSON(history) }
        for r in history {
            let serving = r.servingAfterMs.map { String(format: "serving after %.3fs", Double($0) / 1000) } ?? ""
            print(
                "\(r.startedAt.iso8601)  \(r.id)  \(r.kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)) \(r.result.rawValue.padding(toLength: 11, withPad: " ", startingAt: 0)) gen \(r.generation)  \(r.image)  \(serving)\(r.reason.map { "  \($0)" } ?? "")"
            )
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Work with the node's config file and the cluster's configuration.", subcommands: [Check.self, Show.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the cluster's configuration: its epoch, its members (every majority is counted over them), a change under way.")

        @OptionGroup var connection: Connection

        func run() async throws {
            let shown = try await connection.withClient { try await $0.configuration() }
            func table(_ members: [ControlAPI.ClusterConfiguration.Member]) {
                printTable(
                    [["NAME", "ROLE", "MESH ADDRESS", "PUBLIC ADDRESS"]] + members.map { [$0.name, $0.role, $0.address, $0.publicAddress ?? "-"] })
            }
            print("epoch \(shown.epoch)\(shown.epoch == 1 ? " (the member list the nodes were set up with)" : "")")
            table(shown.members)
            if let epoch = shown.pendingEpoch, let members = shown.pendingMembers {
                print("\nchange under way to epoch \(epoch) (not committed yet):")
                table(members)
            }
            if let removed = shown.removed, !removed.isEmpty {
                print(
                    "\nremoved (their DNS records are taken away): \(removed.map { "\($0.name)\($0.publicAddress.map { " (\($0))" } ?? "")" }.joined(separator: ", "))"
                )
            }
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the config file without starting anything.")

        @Option(name: .long, help: "The node's config file.")
        var config: String = PeerConfig.defaultPath

        func run() async throws {
            do {
                let loaded = try PeerConfig.load(path: config)
                print("\(config): ok")
                print("  node \(loaded.node.name) (\(loaded.node.address)), app \(loaded.app.name) on container port \(loaded.app.port)")
                print("  health \(loaded.app.health.path), timeout \(loaded.app.health.timeout.compactDescription)")
                print("  nginx site \(loaded.nginx.site), listen \(loaded.nginx.listen), server_name \(loaded.nginx.serverName)")
                print("  state in \(loaded.stateDirectory), control socket \(loaded.controlSocket)")
                if let mesh = loaded.mesh {
                    let roles = mesh.members.map { $0.role == .witness ? "\($0.name) (witness)" : $0.name }
                    print(
                        "  mesh on \(mesh.host):\(mesh.port), \(mesh.profile) profile, members \(roles.joined(separator: ", "))\(loaded.isWitness ? "; this node is a witness" : "")"
                    )
                }
                if let dns = loaded.dns {
                    // The token itself is never printed: only where it comes from.
                    let source: String
                    switch dns.token {
                    case .inline: source = "inline (config is 0600)"
                    case .environment(let name): source = "$\(name)"
                    case .file(let path): source = path
                    }
                    print("  dns: \(dns.name) in zone \(dns.zone), token from \(source), hold-down \(dns.holdDown.compactDescription)")
                }
            } catch {
                throw fail(error)
            }
        }
    }
}

struct Members: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the cluster's members as this node sees them: state, app health, version, last seen, RTT.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let members: ControlAPI.Members
        do {
            members = try await connection.withClient { try await $0.members() }
        } catch {
            throw fail(error)
        }
        if json { return try printJSON(members) }
        var rows = [["NAME", "ADDRESS", "STATE", "APP", "IMAGE", "LAST SEEN", "RTT", "CONFIG"]]
        let mine = members.members.first { $0.isSelf }?.configuration
        for m in members.members {
            rows.append([
                m.name + (m.isSelf ? " (this node)" : ""), m.address, m.status,
                m.appHealthy.map { $0 ? "healthy" : "UNHEALTHY" } ?? "-", m.image ?? "-",
                m.isSelf ? "-" : m.lastSeenMsAgo.map { String(format: "%.1fs ago", Double($0) / 1000) } ?? "never",
                m.rttMs.map { String(format: "%.2fms", $0) } ?? "-",
                m.configuration.map { String($0.prefix(8)) + (mine != nil && $0 != mine ? " (DIFFERS)" : "") } ?? "-",
            ])
        }
        printTable(rows)
    }
}

struct Who: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Name the cluster's leader (the node that edits DNS and sends notifications), its term and lease.")

    @OptionGroup var connection: Connection

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let who: ControlAPI.Who
        do {
            who = try await connection.withClient { try await $0.who() }
        } catch {
            throw fail(error)
        }
        if json { return try printJSON(who) }
        if let leader = who.leader, let term = who.term {
            var line = "leader: \(leader) (term \(term))"
            if who.thisNodeLeads, let ms = who.leaseRemainingMs {
                line += ", this node, lease valid for \(String(format: "%.1f", Double(ms) / 1000)) s more"
            }
            print(line)
        } else {
            print("leader: none right now (an election takes about 3 s; without a majority of voters there is none)")
        }
        print("voters: \(who.voters.joined(separator: ", ")) (majority \(who.majority))")
        print("asked:  \(who.node), highest promised term \(who.promisedTerm)")
        if let standingDown = who.standingDown { print("stepped down: \(standingDown)") }
        if let others = who.otherConfigurations {
            print(
                "no elections: \(others.joined(separator: ", ")) run (or last ran) another mesh.members list than \(who.node); give every node the same list and restart the ones that differ (peerctl members shows each node's CONFIG)"
            )
        }
    }
}

/// Rows as columns two spaces apart, each as wide as its widest cell (the first row is the header).
func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    let widths = (0..<first.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows { print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")) }
}
