/// ISO 8601 / RFC 3339 timestamps in UTC, by arithmetic alone (proleptic Gregorian calendar, no time-zone
/// database): what peer writes in its state files, its JSON API and its JSON logs.
///
/// Foundation's ISO 8601 strategies build a Gregorian calendar in the *current* time zone first, which loads
/// ICU's time-zone and locale data into every process that reads a timestamp (about 5 MiB resident in an
/// otherwise idle peerd; docs/benchmarks.md, "peerd memory").
public enum ISO8601 {
    /// `2026-11-27T01:02:03Z`, or with `milliseconds` `2026-11-27T01:02:03.456Z` (truncated, not rounded).
    public static func format(seconds: Int64, nanoseconds: Int = 0, milliseconds: Bool = false) -> String {
        let days = floorDiv(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = civil(fromDays: days)
        var out = pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T"
        out += pad(secondOfDay / 3_600, 2) + ":" + pad(secondOfDay / 60 % 60, 2) + ":" + pad(secondOfDay % 60, 2)
        if milliseconds { out += "." + pad(Int64(nanoseconds / 1_000_000), 3) }
        return out + "Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS`, an optional fraction (any number of digits), and `Z` or an offset
    /// (`+02:00`, `-0530`). `t` and `z` are accepted too. Nil for anything else, or an impossible date.
    public static func parse(_ text: String) -> (seconds: Int64, nanoseconds: Int)? {
        let b = Array(text.utf8)
        func number(_ start: Int, _ count: Int) -> Int64? {
            guard start + count <= b.count else { return nil }
            var value: Int64 = 0
            for i in start..<start + count {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                value = value * 10 + Int64(b[i] - 48)
            }
            return value
        }
        func at(_ i: Int, _ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }
        guard let year = number(0, 4), at(4, "-"), let month = number(5, 2), at(7, "-"), let day = number(8, 2),
            at(10, "T") || at(10, "t"), let hour = number(11, 2), at(13, ":"), let minute = number(14, 2), at(16, ":"),
            let second = number(17, 2)
        else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second < 60
        else { return nil }
        var i = 19
        var nanoseconds = 0
        if at(i, ".") {
            i += 1
            var digits = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                if digits < 9 { nanoseconds = nanoseconds * 10 + Int(b[i] - 48) }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 9) { nanoseconds *= 10 }
        }
        var offset: Int64 = 0
        if at(i, "Z") || at(i, "z") {
            i += 1
        } else if at(i, "+") || at(i, "-") {
            let sign: Int64 = at(i, "-") ? -1 : 1
            guard let hours = number(i + 1, 2), hours < 24 else { return nil }
            let colon = at(i + 3, ":") ? 1 : 0
            guard let minutes = number(i + 3 + colon, 2), minutes < 60 else { return nil }
            offset = sign * (hours * 3_600 + minutes * 60)
            i += 5 + colon
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let seconds = days(fromCivil: year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second - offset
        return (seconds, nanoseconds)
    }

    // H. Hinnant's civil calendar algorithms (days since 1970-01-01 <-> year, month, day).
    static func civil(fromDays days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = floorDiv(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func days(fromCivil year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDiv(y, 400)
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : (a - b + 1) / b }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
