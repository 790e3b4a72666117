import DNSPlanning
import PeerCore
import Testing

@Suite struct DNSPlannerTests {
    let name = "shop.example.com"
    func record(_ id: String, _ content: String, type: String = "A", comment: String? = DNSPlanner.comment) -> DNSRecord {
        DNSRecord(id: id, type: type, name: name, content: content, comment: comment)
    }

    @Test func aDeadMemberLosesItsRecordInABatchThatKeepsAnotherAndComesBackAfterTheHoldDown() {
        var planner = DNSPlanner(holdDown: .seconds(10))
        let records = [record("1", "192.0.2.1"), record("2", "192.0.2.2")]
        var members = [DNSMember(name: "a", address: "192.0.2.1", serving: true), DNSMember(name: "b", address: "192.0.2.2", serving: false)]
        let removal = planner.plan(members: members, records: records, name: name, now: .zero)
        #expect(removal.batch?.deletes.map(\.id) == ["2"])
        #expect(removal.batch?.owners == ["2": "b"])
        // The batch patches the record it keeps: if that one is gone at the provider, nothing is deleted.
        #expect(removal.batch?.guarded?.record.id == "1" && removal.batch?.guarded?.member == "a")
        #expect(removal.batch?.creates.isEmpty == true)
        members[1].serving = true
        let early = planner.plan(members: members, records: [records[0]], name: name, now: .zero + .seconds(1))
        #expect(early.batch == nil)
        #expect(early.heldDown == ["b"])
        // The leader plans again when the hold-down is over (serving since t+1 s, held down 10 s).
        #expect(early.heldDownUntil == .zero + .seconds(11))
        #expect(removal.heldDownUntil == nil)
        let late = planner.plan(members: members, records: [records[0]], name: name, now: .zero + .seconds(11))
        #expect(late.batch?.creates == [DNSBatch.Create(member: "b", address: "192.0.2.2")])
        #expect(late.batch?.guarded == nil, "a batch that only creates needs no guard")
        #expect(late.heldDownUntil == nil)
    }

    @Test func anAddressWrittenDifferentlyIsTheSameRecord() {
        // A config may write an IPv6 address in any valid form; the provider lists it in RFC 5952's. Compared as
        // text, the record would be deleted and created again on every pass.
        var planner = DNSPlanner(holdDown: .zero)
        let records = [record("6", "2001:db8::1", type: "AAAA"), record("4", "192.0.2.1")]
        let members = [
            DNSMember(name: "a", address: "2001:DB8:0:0::0001", serving: true), DNSMember(name: "b", address: "192.0.2.1", serving: true),
        ]
        #expect(planner.plan(members: members, records: records, name: name, now: .zero).batch == nil)
        let leaving = planner.plan(
            members: [members[0], DNSMember(name: "b", address: "192.0.2.1", serving: false)], records: records, name: name, now: .zero)
        #expect(leaving.batch?.deletes.map(\.id) == ["4"])
        #expect(leaving.batch?.guarded?.record.id == "6")
        #expect(leaving.batch?.creates.isEmpty == true)
    }

    @Test func nobodyServingKeepsEveryRecordAndSaysSo() {
        var planner = DNSPlanner(holdDown: .seconds(10))
        let records = [record("1", "192.0.2.1"), record("2", "192.0.2.2")]
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "b", address: "192.0.2.2", serving: false)],
            records: records, name: name, now: .zero)
        #expect(plan.failOpen)
        #expect(plan.batch == nil)
    }

    @Test func recordsOfOthersAndOfUnknownMembersAreLeftAlone() {
        var planner = DNSPlanner(holdDown: .zero)
        let records = [
            record("1", "192.0.2.1"), record("x", "198.51.100.7", comment: nil),  // someone else's
            record("u", "192.0.2.9"),  // peer's comment, but it names no member and no member points there
            record("6", "2001:db8::1", type: "AAAA"), DNSRecord(id: "t", type: "TXT", name: name, content: "v=1"),
        ]
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "c", address: "2001:db8::1", serving: true)],
            records: records, name: name, now: .zero)
        #expect(plan.batch?.deletes.map(\.id) == ["1"])
        #expect(plan.batch?.guarded?.record.id == "6")
        #expect(plan.batch?.creates.isEmpty == true)
    }

    /// A member that has been down since every node started: nobody heard its address, but its record's comment
    /// names it.
    @Test func aRecordIsKnownByTheMemberItsCommentNames() {
        var planner = DNSPlanner(holdDown: .zero)
        let records = [record("1", "192.0.2.1"), record("3", "192.0.2.3", comment: DNSPlanner.comment(member: "c", term: 4))]
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: true), DNSMember(name: "c", address: nil, serving: false)],
            records: records, name: name, now: .zero)
        #expect(plan.batch?.deletes.map(\.id) == ["3"])
        #expect(plan.batch?.owners == ["3": "c"])
    }

    /// Replacing the only record (a dies, b serves): the new record is posted first, the old one deleted only in a
    /// later batch that keeps the new one — never a moment with zero records, not even while the provider
    /// propagates one batch.
    @Test func aReplacementPostsFirstAndDeletesOnlyOnceSomethingIsKept() {
        var planner = DNSPlanner(holdDown: .zero)
        let members = [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "b", address: "192.0.2.2", serving: true)]
        let first = planner.plan(members: members, records: [record("1", "192.0.2.1")], name: name, now: .zero)
        #expect(first.batch?.deletes.isEmpty == true)
        #expect(first.batch?.creates.map(\.address) == ["192.0.2.2"])
        #expect(first.withheldDeletes == 1)
        let created = record("2", "192.0.2.2", comment: DNSPlanner.comment(member: "b", term: 3))
        let second = planner.plan(members: members, records: [record("1", "192.0.2.1"), created], name: name, now: .zero)
        #expect(second.batch?.deletes.map(\.id) == ["1"])
        #expect(second.batch?.guarded?.record == created)
        #expect(second.withheldDeletes == 0)
    }

    @Test func theLastRecordOfTheNameIsNeverDeleted() {
        var planner = DNSPlanner(holdDown: .seconds(60))
        // b serves again but is held down; a is dead and holds the only record.
        _ = planner.plan(members: [DNSMember(name: "b", address: "192.0.2.2", serving: true)], records: [], name: name, now: .zero)
        let plan = planner.plan(
            members: [DNSMember(name: "a", address: "192.0.2.1", serving: false), DNSMember(name: "b", address: "192.0.2.2", serving: true)],
            records: [record("1", "192.0.2.1")], name: name, now: .zero + .seconds(1))
        #expect(plan.batch == nil)
    }

    @Test func commentsNameTheMemberAndTheTerm() {
        let comment = DNSPlanner.comment(member: "web-2", term: 17)
        #expect(comment == "managed by peer · node web-2 · term 17")
        #expect(DNSPlanner.parse(comment: comment)?.member == "web-2")
        #expect(DNSPlanner.parse(comment: comment)?.term == 17)
        #expect(DNSPlanner.parse(comment: DNSPlanner.comment) == nil)
        #expect(DNSPlanner.parse(comment: "set by hand") == nil)
    }
}
