import NIOConcurrencyHelpers
import PeerCore

/// Lets one loop sleep until something it watches changes or a time has passed, whichever comes first — so an
/// idle peerd wakes when there is something to do instead of polling. A wake that comes while the loop is busy
/// is kept for its next wait: nothing that happens between two looks is missed.
final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = NIOLockedValueBox(State())

    init() {}

    func wake() {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns when woken (or when a wake came since the last wait), after `timeout`, or when the task is
    /// cancelled.
    func wait(atMost timeout: Duration, clock: any PeerClock) async {
        let woken = state.withLockedValue { state in
            defer { state.pending = false }
            return state.pending
        }
        if woken || timeout <= .zero { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await clock.sleep(for: timeout) }
            group.addTask { await self.woken() }
            await group.next()
            group.cancelAll()
        }
    }

    private func woken() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLockedValue { state -> Bool in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
