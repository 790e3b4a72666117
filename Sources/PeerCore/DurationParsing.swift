extension Duration {
    /// Parses the durations operators write in config files: `250ms`, `2s`, `1.5s`, `5m`, `1h`, `90` (seconds).
    /// Returns nil for anything else, so the caller can name the key that holds it.
    public init?(configString raw: String) {
        let text = raw.trimmingCharacters(in: " \t")
        guard !text.isEmpty else { return nil }
        let units: [(suffix: String, nanos: Double)] = [
            ("ms", 1e6), ("us", 1e3), ("µs", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        var number = Substring(text)
        var scale = 1e9
        for unit in units where text.hasSuffix(unit.suffix) {
            number = text.dropLast(unit.suffix.count)
            scale = unit.nanos
            break
        }
        guard let value = Double(number), value.isFinite, value >= 0, value * scale < 9e18 else { return nil }
        self = .nanoseconds(Int64((value * scale).rounded()))
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
