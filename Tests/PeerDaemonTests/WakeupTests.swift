import NIOConcurrencyHelpers
import PeerCore
import Testing

@testable import PeerDaemon

/// The loops of an idle peerd sleep in ``Wakeup``: a change must end the sleep, and must not be lost when it
/// comes while the loop is busy.
@Suite(.timeLimit(.minutes(1))) struct WakeupTests {
    /// Sleeps until cancelled: a wait that returns with it was woken or cancelled, never timed out.
    struct SleepsForever: PeerClock {
        func now() -> Instant { .zero }
        func sleep(for duration: Duration) async throws { try await Task.sleep(for: .seconds(86_400)) }
    }

    /// Sleeps briefly and counts the sleeps it finished: a wait that returns with one finished timed out.
    final class CountingClock: PeerClock {
        let finished = NIOLockedValueBox(0)
        func now() -> Instant { .zero }
        func sleep(for duration: Duration) async throws {
            try await Task.sleep(for: .milliseconds(20))
            finished.withLockedValue { $0 += 1 }
        }
    }

    /// Returns only when woken (or cancelled): the clock never ends the wait.
    static func untilWoken(_ wakeup: Wakeup) async {
        await wakeup.wait(atMost: .seconds(86_400), clock: SleepsForever())
    }

    /// A task waiting on `wakeup`, given the time to start its wait.
    static func waiting(on wakeup: Wakeup) async -> Task<Void, Never> {
        let task = Task { await untilWoken(wakeup) }
        try? await Task.sleep(for: .milliseconds(50))
        return task
    }

    @Test func aWakeDuringTheWaitEndsIt() async {
        let wakeup = Wakeup()
        let waiting = await Self.waiting(on: wakeup)
        wakeup.wake()
        await waiting.value
    }

    @Test func aWakeWhileTheLoopIsBusyIsKeptForItsNextWait() async {
        let wakeup = Wakeup()
        wakeup.wake()
        wakeup.wake()
        await Self.untilWoken(wakeup)
        // Two wakes before one wait are one: the next wait sleeps its time out.
        let clock = CountingClock()
        await wakeup.wait(atMost: .seconds(1), clock: clock)
        #expect(clock.finished.withLockedValue { $0 } == 1)
    }

    @Test func withoutAWakeTheWaitEndsAfterItsTime() async {
        let wakeup = Wakeup()
        let clock = CountingClock()
        await wakeup.wait(atMost: .seconds(1), clock: clock)
        await wakeup.wait(atMost: .seconds(1), clock: clock)
        #expect(clock.finished.withLockedValue { $0 } == 2)
    }

    @Test func cancellingTheWaitingTaskEndsTheWait() async {
        let wakeup = Wakeup()
        let waiting = await Self.waiting(on: wakeup)
        waiting.cancel()
        await waiting.value
        // The wait left nothing behind: a later wake is kept for the next one.
        wakeup.wake()
        await Self.untilWoken(wakeup)
    }
}
