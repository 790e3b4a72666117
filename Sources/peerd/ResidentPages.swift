import CPeerProcess
import Foundation
import Logging
import PeerDaemon

/// The heap's free pages go back too (malloc_trim): after a burst — a flood of connections on the mesh port, a
/// deploy — the resident set comes back down within a minute instead of staying at its peak.
///
/// An idle peerd needs little of the code it ran to start (config, certificates, TLS set-up, adoption) or to
/// deploy: 30 s after start, then every minute, it releases the pages of its executable's read-only
/// segments (`peer_release_executable_pages`). They stay in the page cache; what runs again maps them back
/// (minor faults, microseconds). With the idle code laid out together (deploy/peerd.order), few come back.
/// SIGUSR1 releases them at once (cluster/profile-order uses it to see which pages an idle peerd touches).
enum ResidentPages {
    static func releasePeriodically(logger: Logger) -> Task<Void, Never> {
        if peer_release_executable_pages_on_signal(SIGUSR1) != 0 {
            logger.debug("SIGUSR1 will not release the executable's pages", metadata: ["error": "\(String(cString: strerror(errno)))"])
        }
        return Task.detached {
            var delay = Duration.seconds(30)
            while !Task.isCancelled {
                try? await EventLoopClock().sleep(for: delay)
                if Task.isCancelled { break }
                delay = .seconds(60)
                release(logger: logger)
            }
        }
    }

    static func release(logger: Logger) {
        // The resident set is read only for the debug line.
        let before = logger.logLevel <= .debug ? residentMiB() : 0
        _ = peer_release_free_heap()
        let released = peer_release_executable_pages()
        if released < 0 {
            logger.debug("could not release the executable's pages", metadata: ["error": "\(String(cString: strerror(errno)))"])
            return
        }
        logger.debug(
            "released the executable's pages",
            metadata: ["mapped_mib": "\(released >> 20)", "rss_mib_before": "\(before)", "rss_mib_after": "\(residentMiB())"])
    }

    /// This process's resident set, in MiB (/proc/self/statm).
    static func residentMiB() -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return -1 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return -1 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE))) >> 20
    }
}
