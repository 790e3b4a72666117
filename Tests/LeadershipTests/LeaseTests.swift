import Leadership
import PeerCore
import Testing

/// One lease instance, message by message.
@Suite struct LeaseTests {
    let a = MemberID("a"), b = MemberID("b"), c = MemberID("c")

    /// A term of `UInt64.max` from a voter (broken, hostile, or a witness's bad disk) would be promised and
    /// persisted, and every later campaign's `+ 1` would trap: every number past ``Counter/limit`` is ignored.
    @Test func absurdNumbersFromAVoterAreIgnored() {
        var lease = Lease(me: a, voters: [a, b, c], canLead: true, promised: 3, settings: .standard, seed: 1, now: .zero)
        for message in [
            Lease.Message.request(term: .max, attempt: 1), .request(term: 4, attempt: .max), .grant(term: Counter.limit + 1, attempt: 1),
            .reject(term: 4, attempt: 1, promised: .max, holder: b), .release(term: .max),
        ] {
            #expect(lease.receive(message, from: b, now: .zero).isEmpty, "\(message)")
        }
        #expect(lease.promised == 3)
        // A plausible request still gets an answer.
        let answer = lease.receive(.request(term: 4, attempt: 1), from: b, now: .zero)
        #expect(answer.contains { if case .send(to: b, _) = $0 { true } else { false } }, "\(answer)")
    }
}
