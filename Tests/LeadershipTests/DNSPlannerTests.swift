import DNSPlanning
import PeerCore
import Testing

@Suite struct DNSPlannerTests {
    let name = "shop.example.com"
    func record(_ id: String, _ content: String, type: String = "A", comment: String? = DNSPlanner.comment) -> DNSRecord {
        DNSRecord(id: id, type: type, name: name, content: content, comment: comment)
    }

    @Test func aDeadMemberLosesItsRecordAndComesBackAfterTheHoldDown() {
        var planner = DNSPlanner(holdDown: .seconds(10))
        let records = [record("1", "192.0.2.1"), record("2", "192.0.2.2")]
        var members = [DNSMember(name: "a", address: "192.0.2.1", serving: true), DNSMember(name: "b", address: "192.0.2.2", serving: false)]
        let removal = planner.plan(members: members, records: records, name: name, now: .zero)
        #expect(removal.changes.deletes.map(\.id) == ["2"])
        #expect(removal.changes.creates.isEmpty)
        members[1].serving = true
        let early = planner.plan(members: members, records: [records[0]], name: name, now: .zero + .seconds(1))
        #expect(early.changes.isEmpty)
        #expect(early.heldDown == ["b"])
        // The leader plans again when the hold-down is over (serving since t+1 s, held down 10 s).
        #expect(early.heldDownUntil == .zero + .seconds(11))
        #expect(removal.heldDownUntil == nil)
        let late = planner.plan(members: members, records: [records[0]], name: name, now: .zero + .seconds(11))
        #expect(late.changes.creates == ["192.0.2.2"])
        #expect(late.heldDownUntil == nil)
    }

    @Test func nobodyServingKeepsEveryRecordAndSaysSo() {
        var planner = DNSPlanner(holdDown: .seconds(10))
        let records = [record("1", "192.0.2.1"), record("2", "192.0.2.2")]
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "b", address: "192.0.2.2", serving: false)],
            records: records, name: name, now: .zero)
        #expect(plan.failOpen)
        #expect(plan.changes.isEmpty)
    }

    @Test func recordsOfOthersAndOfUnknownMembersAreLeftAlone() {
        var planner = DNSPlanner(holdDown: .zero)
        let records = [
            record("1", "192.0.2.1"), record("x", "198.51.100.7", comment: nil),  // someone else's
            record("u", "192.0.2.9"),  // ours by comment, but no member we know points there
            record("6", "2001:db8::1", type: "AAAA"), DNSRecord(id: "t", type: "TXT", name: name, content: "v=1"),
        ]
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "c", address: "2001:db8::1", serving: true)],
            records: records, name: name, now: .zero)
        #expect(plan.changes.deletes.map(\.id) == ["1"])
        #expect(plan.changes.creates.isEmpty)
    }

    @Test func theLastRecordOfTheNameIsNeverDeleted() {
        var planner = DNSPlanner(holdDown: .seconds(60))
        // b serves again but is held down; a is dead and holds the only record.
        _ = planner.plan(members: [DNSMember(name: "b", address: "192.0.2.2", serving: true)], records: [], name: name, now: .zero)
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "b", address: "192.0.2.2", serving: true)],
            records: [record("1", "192.0.2.1")], name: name, now: .zero + .seconds(1))
        #expect(plan.changes.deletes.isEmpty)
    }
}
