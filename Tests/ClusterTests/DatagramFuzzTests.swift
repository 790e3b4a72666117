import Cluster
import Foundation
import Membership
import PeerCore
import Testing

/// A member's key in the wrong hands, or a member that is broken: what it seals opens, so whatever it sends
/// reaches the membership and the lease. Fuzzed datagrams — real ones with numbers made extreme, text made huge,
/// bytes flipped, cut short — are decoded as peerd decodes them and the ones that decode are delivered from that
/// member to a node of a running cluster. Nothing may trap; no number past ``Counter/limit`` may be taken or
/// persisted; the node's own datagrams stay within what receivers accept; and once the fuzzing stops the cluster
/// agrees again on who is alive and who leads.
///
/// Mutations checked: `Counter.isPlausible` always true → traps on `+ 1` (an incarnation or term of 2^64 − 1);
/// `AppStatus.bounded()` not applied where gossip is taken → the node's datagrams grow past 60,000 bytes.
@Suite struct DatagramFuzzTests {
    static let extremes = ["18446744073709551615", "18446744073709551616", "4611686018427387905", "-1", "1e300", "0", "9007199254740993"]

    /// One mutation of a datagram's JSON.
    static func mutate(_ json: [UInt8], _ round: Int, _ rng: inout SplitMix64) -> [UInt8] {
        var text = String(decoding: json, as: UTF8.self)
        switch round % 6 {
        case 0, 1:
            // Every number, or one in three, made extreme.
            let all = round % 6 == 0
            var out = "", digits = ""
            for c in text + " " {
                if c.isNumber {
                    digits.append(c)
                    continue
                }
                if !digits.isEmpty {
                    out += all || Int.random(in: 0..<3, using: &rng) == 0 ? extremes.randomElement(using: &rng)! : digits
                    digits = ""
                }
                out.append(c)
            }
            text = String(out.dropLast())
        case 2:
            // A string made huge (names, images, reasons, addresses).
            let parts = text.split(separator: "\"", omittingEmptySubsequences: false)
            guard parts.count > 2 else { break }
            var changed = parts.map(String.init)
            let index = 1 + 2 * Int.random(in: 0..<(parts.count / 2), using: &rng)
            if index < changed.count { changed[index] += String(repeating: "x", count: Int.random(in: 1_000...100_000, using: &rng)) }
            text = changed.joined(separator: "\"")
        case 3:
            var bytes = json
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            return bytes
        case 4:
            return Array(json.prefix(Int.random(in: 0..<json.count, using: &rng)))
        default:
            // A list made long: the same element many times.
            if let open = text.firstIndex(of: "["), let close = text[open...].firstIndex(of: "]"), text.index(after: open) < close {
                let element = text[text.index(after: open)..<close]
                text.replaceSubrange(open...close, with: "[" + Array(repeating: String(element), count: 2_000).joined(separator: ",") + "]")
            }
        }
        return Array(text.utf8)
    }

    @Test(arguments: [5, 6] as [UInt64]) func fuzzedDatagramsFromAMemberDoNoLastingHarm(seed: UInt64) throws {
        var sim = MeshSimulation(size: 3, witness: false, seed: seed)
        sim.sent = []
        sim.run(for: .seconds(10))
        let samples = try sim.sent!.map { Array(try JSONEncoder().encode($0)) }
        sim.sent = nil
        #expect(samples.count > 100)
        let target = MemberID("n1"), member = MemberID("n2")
        var rng = SplitMix64(seed: seed)
        var decoded = 0
        for round in 0..<3_000 {
            let bytes = Self.mutate(samples.randomElement(using: &rng)!, round, &rng)
            // As peerd does with what opened: decode, and drop what does not.
            guard let datagram = try? JSONDecoder().decode(MeshNode.Datagram.self, from: Data(bytes)) else { continue }
            decoded += 1
            // Signatures checked as peerd does (what n2 sent unchanged checks out; what the fuzzer changed does not).
            let directives = sim.receive(datagram, at: target, from: member, now: sim.local(target))
            for case .send(let reply, _) in directives {
                let size = try JSONEncoder().encode(reply).count
                #expect(size < 60_000, "round \(round): n1 sends a datagram of \(size) bytes")
            }
            sim.carryOut(directives, from: target)
            if round % 10 == 0 { sim.run(for: .milliseconds(100)) }
            for id in sim.running {
                #expect((sim.persisted[id] ?? 0) <= Counter.limit, "round \(round): \(id) persisted term \(sim.persisted[id] ?? 0)")
                for state in sim.nodes[id]!.mesh.swim.view.map(\.state) where state.incarnation > Counter.limit {
                    Issue.record("round \(round): \(id) took incarnation \(state.incarnation) for \(state.id)")
                }
            }
        }
        #expect(decoded > 500, "the fuzzer reached the membership")
        #expect(sim.violations.isEmpty, "\(sim.violations)")
        // The fuzzing stops: the cluster agrees again on who is alive and who leads.
        sim.run(for: .seconds(30))
        let (agreed, why) = sim.converged()
        #expect(agreed, "seed \(seed): \(why)")
    }
}
