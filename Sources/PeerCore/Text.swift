extension String {
    /// At most `limit` bytes of UTF-8 from its start, cut between characters, ending in "…" when cut: for text
    /// that travels (gossip, notifications) and must have a size.
    public func cut(toBytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var kept = ""
        var bytes = 0
        let budget = Swift.max(0, limit - 3)  // "…" is 3 bytes
        for character in self {
            let size = character.utf8.count
            if bytes + size > budget { break }
            kept.append(character)
            bytes += size
        }
        return kept + "…"
    }

    /// At most `limit` bytes of UTF-8 from its end (the last lines of a log matter most), starting with "…" when
    /// cut.
    public func tail(bytes limit: Int) -> String {
        guard utf8.count > limit else { return self }
        var kept: [Character] = []
        var bytes = 0
        let budget = Swift.max(0, limit - 3)
        for character in reversed() {
            let size = character.utf8.count
            if bytes + size > budget { break }
            kept.append(character)
            bytes += size
        }
        return "…" + String(kept.reversed())
    }
}
