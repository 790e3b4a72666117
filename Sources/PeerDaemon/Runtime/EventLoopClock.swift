import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import PeerCore

/// peerd's clock: time from CLOCK_MONOTONIC_RAW (``RawMonotonic``: not slewed by NTP, so the lease's drift bound
/// holds), sleeps on NIO's event loop timers rather than Swift concurrency's (which run on dispatch's timer thread
/// and then wake a thread of its pool): peerd's loops sleep all the time, and each timer then costs one wakeup
/// instead of two or three. A sleep may end early or late by the slew (8 % at most); every loop looks at the time
/// again when it wakes.
public struct EventLoopClock: PeerClock {
    public init() {}

    public func now() -> Instant { RawMonotonic.now() }

    public func sleep(for duration: Duration) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let scheduled = NIOLockedValueBox<Scheduled<Void>?>(nil)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let timer = loop.scheduleTask(in: .nanoseconds(max(0, duration.nanoseconds))) {}
                timer.futureResult.whenComplete { result in
                    switch result {
                    case .success: continuation.resume()
                    case .failure: continuation.resume(throwing: CancellationError())
                    }
                }
                scheduled.withLockedValue { $0 = timer }
                // Cancelled before the timer was there to cancel.
                if Task.isCancelled { timer.cancel() }
            }
        } onCancel: {
            scheduled.withLockedValue { $0 }?.cancel()
        }
    }
}
