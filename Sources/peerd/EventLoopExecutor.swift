import CPeerProcess
import NIOCore
import NIOPosix

/// Runs Swift concurrency's jobs on NIO's event loop threads instead of a second pool of threads. peerd's work
/// is I/O on those loops (mesh datagrams and TLS, the control socket, Docker and nginx calls): with one pool, a
/// datagram that arrives is handled on the thread that read it, and an idle peerd wakes a thread per timer
/// rather than three (dispatch's timer thread, a pool thread, then the event loop).
enum EventLoopExecutor {
    typealias Original = @convention(thin) (UnownedJob) -> Void
    typealias Hook = @convention(thin) (UnownedJob, Original) -> Void

    /// Call once, first thing in main. False when another hook was set (peerd then runs on Swift's own pool).
    static func install() -> Bool {
        withUnsafeTemporaryAllocation(of: Hook.self, capacity: 1) { storage in
            // The loop the caller runs on when it is one of them (no thread switch), else the next one.
            storage.baseAddress!.initialize { job, _ in
                MultiThreadedEventLoopGroup.singleton.any().enqueue(ExecutorJob(job))
            }
            return storage.baseAddress!.withMemoryRebound(to: UnsafeRawPointer.self, capacity: 1) {
                peer_install_enqueue_global_hook($0.pointee) == 1
            }
        }
    }
}
