/// A Docker image reference split the way the Engine's pull endpoint wants it:
/// `fromImage` = repository, `tag` = tag or digest.
public struct ImageReference: Sendable, Hashable, CustomStringConvertible {
    public var repository: String
    /// A tag (`v2`) or a digest (`sha256:…`); `latest` when the reference names neither.
    public var tag: String
    public var isDigest: Bool
    /// The reference as it was given (what peer records and shows: `app` stays `app`, not `app:latest`).
    public var given: String

    /// The registry host the image comes from (`ghcr.io`, `127.0.0.1:5000`), or `docker.io`.
    public var registry: String {
        let first = repository.split(separator: "/", maxSplits: 1).first.map(String.init) ?? repository
        let isHost = repository.contains("/") && (first.contains(".") || first.contains(":") || first == "localhost")
        return isHost ? first : "docker.io"
    }

    public var description: String { isDigest ? "\(repository)@\(tag)" : "\(repository):\(tag)" }

    public struct Invalid: Error, CustomStringConvertible {
        public var reference: String
        public var reason: String
        public var description: String {
            "invalid image reference \"\(reference)\": \(reason) (expected [registry/]name[:tag] or name@sha256:digest, e.g. ghcr.io/acme/app:1.4.2)"
        }
    }

    public init(parsing raw: String) throws(Invalid) {
        let text = raw
        guard !text.isEmpty else { throw Invalid(reference: raw, reason: "it is empty") }
        guard !text.contains(where: { $0.isWhitespace }) else {
            throw Invalid(reference: raw, reason: "it contains white space")
        }
        guard !text.hasPrefix("/"), !text.hasSuffix("/"), !text.hasPrefix("-") else {
            throw Invalid(reference: raw, reason: "it starts or ends with a separator")
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/:@")
        if let bad = text.first(where: { !allowed.contains($0) }) {
            throw Invalid(reference: raw, reason: "character \"\(bad)\" is not allowed")
        }
        if let at = text.firstIndex(of: "@") {
            let repo = String(text[..<at])
            let digest = String(text[text.index(after: at)...])
            guard digest.hasPrefix("sha256:"), digest.count == 71,
                digest.dropFirst(7).allSatisfy({ $0.isHexDigit && !$0.isUppercase })
            else { throw Invalid(reference: raw, reason: "the digest must be sha256: followed by 64 hex digits") }
            // A reference may carry both a tag and a digest; the digest wins.
            let bare = Self.splitTag(repo).repository
            try Self.checkRepository(bare, raw: raw)
            self.repository = bare
            self.tag = digest
            self.isDigest = true
            self.given = raw
            return
        }
        let (repo, tag) = Self.splitTag(text)
        try Self.checkRepository(repo, raw: raw)
        if let tag {
            guard !tag.isEmpty, tag.count <= 128, tag.first != ".", tag.first != "-",
                tag.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" })
            else { throw Invalid(reference: raw, reason: "tag \"\(tag)\" is not valid") }
        }
        self.repository = repo
        self.tag = tag ?? "latest"
        self.isDigest = false
        self.given = raw
    }

    private static func splitTag(_ text: String) -> (repository: String, tag: String?) {
        // The tag is after the last ':' that comes after the last '/', so registry ports stay put.
        let lastSlash = text.lastIndex(of: "/") ?? text.startIndex
        guard let colon = text[lastSlash...].lastIndex(of: ":") else { return (text, nil) }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    private static func checkRepository(_ repo: String, raw: String) throws(Invalid) {
        guard repo.count <= 255 else {
            throw Invalid(reference: raw, reason: "the name is \(repo.count) characters long; Docker allows 255")
        }
        let parts = repo.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.contains(where: \.isEmpty) else {
            throw Invalid(reference: raw, reason: "empty path component")
        }
        for (index, part) in parts.enumerated() where index > 0 || parts.count == 1 {
            guard part == part.lowercased() else {
                throw Invalid(reference: raw, reason: "repository names must be lowercase")
            }
            guard !part.contains(":") else { throw Invalid(reference: raw, reason: "misplaced ':'") }
        }
    }
}
