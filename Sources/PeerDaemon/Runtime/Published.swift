import NIOConcurrencyHelpers

/// A value that one owner publishes and others read: its newest version at any time (``current``), and a wake
/// for each watcher whenever it changes in a way that watcher cares about. Watchers never call back into the
/// owner: the value is all there is to know.
final class Published<Value: Sendable & Equatable>: Sendable {
    private struct Watcher {
        var wakeup: Wakeup
        var when: @Sendable (Value, Value) -> Bool
    }

    private struct State {
        var value: Value
        var watchers: [Watcher] = []
    }

    private let state: NIOLockedValueBox<State>

    init(_ initial: Value) { state = NIOLockedValueBox(State(value: initial)) }

    var current: Value { state.withLockedValue { $0.value } }

    /// Replaces the value and wakes the watchers whose condition holds for (old, new).
    func publish(_ value: Value) {
        let wake = state.withLockedValue { state -> [Wakeup] in
            let old = state.value
            guard old != value else { return [] }
            state.value = value
            return state.watchers.filter { $0.when(old, value) }.map(\.wakeup)
        }
        for wakeup in wake { wakeup.wake() }
    }

    /// Changes part of the value (an announcement's own slice), then wakes as ``publish(_:)`` does.
    func update(_ change: (inout Value) -> Void) {
        let wake = state.withLockedValue { state -> [Wakeup] in
            let old = state.value
            change(&state.value)
            guard old != state.value else { return [] }
            return state.watchers.filter { $0.when(old, state.value) }.map(\.wakeup)
        }
        for wakeup in wake { wakeup.wake() }
    }

    /// Wakes `wakeup` on every change for which `when(old, new)` holds (every change by default), for as long as
    /// this lives (a service's loop).
    func watch(_ wakeup: Wakeup, when: @escaping @Sendable (Value, Value) -> Bool = { _, _ in true }) {
        state.withLockedValue { $0.watchers.append(Watcher(wakeup: wakeup, when: when)) }
    }

    /// Stops waking `wakeup` (a watch for one request's wait).
    func unwatch(_ wakeup: Wakeup) {
        state.withLockedValue { $0.watchers.removeAll { $0.wakeup === wakeup } }
    }
}
