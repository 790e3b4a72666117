#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Whole-file writes that readers and crashes only ever see complete: temp file in the same folder,
/// fsync, rename over the target, fsync the folder. The mode applies from creation, so a file that holds a
/// secret is never readable by others, not even for a moment.
public enum AtomicFile {
    public struct WriteError: Error, CustomStringConvertible, Sendable {
        public var path: String
        public var reason: String
        public var description: String {
            "could not write \(path): \(reason); check the disk has space and the folder is writable"
        }
    }

    /// Where `path` really is: its deepest folder that exists, with every symbolic link resolved, and the rest of
    /// the path (to be created) appended. nil when not even `/` resolves.
    public static func resolvedPath(_ path: String) -> String? {
        var existing = path.isEmpty ? "/" : path
        var rest: [String] = []
        while true {
            if let real = realpath(existing, nil) {
                defer { free(real) }
                let base = String(cString: real)
                return rest.isEmpty ? base : (base == "/" ? "" : base) + "/" + rest.reversed().joined(separator: "/")
            }
            guard existing != "/", let slash = existing.lastIndex(of: "/") else { return nil }
            rest.append(String(existing[existing.index(after: slash)...]))
            existing = slash == existing.startIndex ? "/" : String(existing[..<slash])
        }
    }

    public static func write(_ bytes: some Collection<UInt8>, to path: String, mode: mode_t = 0o644) throws(WriteError) {
        // A new file of our own (never one planted there, nor through a link), under a name nobody can guess.
        let temp = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw WriteError(path: path, reason: lastError()) }
        var failure: String?
        let data = Array(bytes)
        var offset = 0
        while offset < data.count, failure == nil {
            let written = data[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno != EINTR { failure = lastError() }
            } else {
                offset += written
            }
        }
        if failure == nil, fchmod(fd, mode) != 0 { failure = lastError() }
        if failure == nil, fsync(fd) != 0 { failure = lastError() }
        close(fd)
        if failure == nil, rename(temp, path) != 0 { failure = lastError() }
        if let failure {
            unlink(temp)
            throw WriteError(path: path, reason: failure)
        }
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let dirfd = open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }

    /// Creates a folder (and its parents) if missing and sets its mode — also when it exists already, unless
    /// `onlyIfCreated` (a folder that is not ours, such as `/etc`, keeps its mode).
    public static func makeDirectory(_ path: String, mode: mode_t, onlyIfCreated: Bool = false) throws(WriteError) {
        var current = path.hasPrefix("/") ? "" : "."
        var created = false
        for part in path.split(separator: "/") {
            current += "/\(part)"
            if mkdir(current, 0o755) == 0 {
                created = true
            } else if errno != EEXIST {
                throw WriteError(path: current, reason: lastError())
            }
        }
        if onlyIfCreated && !created { return }
        if chmod(path, mode) != 0 { throw WriteError(path: path, reason: lastError()) }
    }

    private static func lastError() -> String { String(cString: strerror(errno)) }
}
