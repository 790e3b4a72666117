import DNSPlanning
import PeerCore
import Testing

/// The leader's DNS work step by step, with the shell's part played here.
@Suite struct DNSReconcilerTests {
    let name = "shop.example.com"
    let members = [DNSMember(name: "a", address: "192.0.2.1", serving: true), DNSMember(name: "b", address: "192.0.2.2", serving: false)]
    var records: [DNSRecord] {
        [
            DNSRecord(id: "1", type: "A", name: name, content: "192.0.2.1", comment: DNSPlanner.comment),
            DNSRecord(id: "2", type: "A", name: name, content: "192.0.2.2", comment: DNSPlanner.comment),
        ]
    }

    func at(_ ms: Int64) -> Instant { Instant(nanoseconds: ms * 1_000_000) }

    func view(term: UInt64 = 1, until: Int64 = 3000, confirmedAt: Int64 = 0, contested: Bool = false) -> DNSReconciler.View {
        DNSReconciler.View(
            members: members, lease: .init(term: term, validUntil: at(until), confirmedAt: at(confirmedAt), contested: contested), settled: true,
            otherCandidates: 1)
    }

    /// Quiet period, token, listing, a listing for the delete, the voters asked, then the write with its deadline.
    @Test func aDeleteIsListedForConfirmedAndSentWithItsDeadline() {
        var r = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        #expect(r.step(view(), now: at(0)).isEmpty, "quiet after taking the lead")
        #expect(r.nextWake(now: at(0)) == at(500))
        #expect(r.step(view(), now: at(500)) == [.verifyToken])
        _ = r.tokenChecked(nil, now: at(510))
        #expect(r.step(view(), now: at(510)) == [.list])
        _ = r.listed(records, now: at(520))
        #expect(r.step(view(), now: at(520)) == [.list], "a delete is planned from a listing made for it")
        _ = r.listed(records, now: at(530))
        #expect(r.step(view(), now: at(530)) == [.confirmLease])
        #expect(r.step(view(confirmedAt: 0), now: at(540)).isEmpty, "an answer to an older round does not do")
        let write = r.step(view(until: 3000, confirmedAt: 530), now: at(550))
        guard case .write(let batch, let term, let deadline) = write.first else {
            Issue.record("no write: \(write)")
            return
        }
        #expect(batch.deletes.map(\.id) == ["2"] && batch.guarded?.record.id == "1" && term == 1)
        #expect(deadline == at(2500), "the lease's end less the commit allowance")
    }

    @Test func aContestedLeaseDoesNotWrite() {
        var r = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        _ = r.step(view(), now: at(0))
        _ = r.step(view(), now: at(500))
        _ = r.tokenChecked(nil, now: at(500))
        _ = r.step(view(), now: at(500))
        _ = r.listed(records, now: at(500))
        _ = r.step(view(), now: at(500))
        _ = r.listed(records, now: at(500))
        #expect(r.step(view(), now: at(500)) == [.confirmLease])
        #expect(r.step(view(confirmedAt: 600, contested: true), now: at(700)).isEmpty)
    }

    /// A renewal under a higher term without a gap is the same leadership: no second quiet period, nothing lost.
    @Test func aRenewalUnderAHigherTermContinuesTheLeadership() {
        var r = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        _ = r.step(view(), now: at(0))
        _ = r.step(view(), now: at(500))
        _ = r.tokenChecked(nil, now: at(500))
        #expect(r.step(view(term: 2, until: 3500), now: at(600)) == [.list], "not quiet again under term 2")
        // After a gap (the lease ran out), a new term is a new leadership.
        var fresh = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        _ = fresh.step(view(), now: at(0))
        #expect(fresh.step(view(term: 3, until: 9000), now: at(4000)).isEmpty, "quiet: the old lease had run out")
    }

    @Test func nextWakeIsNeverInThePast() {
        var r = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(5)))
        _ = r.step(view(until: 20_000), now: at(0))
        _ = r.step(view(until: 20_000), now: at(500))
        _ = r.tokenChecked(nil, now: at(500))
        _ = r.step(view(until: 20_000), now: at(500))
        _ = r.listed(records.filter { $0.id == "1" }, now: at(500))
        _ = r.step(view(until: 20_000), now: at(500))
        // Long after the refresh time, a failed listing: the next wake is the retry, not the past refresh.
        _ = r.step(view(until: 20_000), now: at(6000))
        _ = r.listFailed("timed out", incapacity: true, now: at(6000))
        for now in [Int64(6000), 6500, 6999] { #expect((r.nextWake(now: at(now)) ?? at(now + 1)) > at(now)) }
    }

    /// Three failures for want of means in a row: the leader steps down — unless no other node could take over.
    @Test func aLeaderThatCannotWriteStepsDownIfAnotherCan() {
        var r = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        _ = r.step(view(until: 60_000), now: at(0))
        var stepped = false
        var now: Int64 = 500
        for _ in 0..<3 {
            _ = r.step(view(until: 60_000), now: at(now))
            stepped = r.tokenChecked("403 9109 Invalid access token", now: at(now)).contains { if case .stepDown = $0 { true } else { false } }
            now += 1100
        }
        #expect(stepped)
        var alone = DNSReconciler(settings: .init(name: name, holdDown: .seconds(1), refresh: .seconds(60)))
        var lonely = view(until: 60_000)
        lonely.otherCandidates = 0
        _ = alone.step(lonely, now: at(0))
        var any = false
        now = 500
        for _ in 0..<4 {
            _ = alone.step(lonely, now: at(now))
            any = any || alone.tokenChecked("403", now: at(now)).contains { if case .stepDown = $0 { true } else { false } }
            now += 1100
        }
        #expect(!any, "the only node left keeps leading")
    }
}
