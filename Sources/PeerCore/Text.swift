extension String {
    /// At most `limit` bytes of UTF-8 from its start, cut between characters, ending in "…" when cut: for text
    /// that travels (gossip, notifications) and must have a size.
    public func cut(toBytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        return String(Self.fitting(self, bytes: limit - Self.ellipsisBytes)) + "…"
    }

    /// At most `limit` bytes of UTF-8 from its end (the last lines of a log matter most), starting with "…" when
    /// cut.
    public func tail(bytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        return "…" + String(Self.fitting(reversed(), bytes: limit - Self.ellipsisBytes).reversed())
    }

    private static let ellipsisBytes = "…".utf8.count

    /// The leading characters of `characters` whose UTF-8 fits in `budget` bytes.
    private static func fitting(_ characters: some Sequence<Character>, bytes budget: Int) -> [Character] {
        var kept: [Character] = []
        var bytes = 0
        for character in characters {
            let size = character.utf8.count
            if bytes + size > budget { break }
            kept.append(character)
            bytes += size
        }
        return kept
    }
}
