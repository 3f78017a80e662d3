//! Unix times as the dates people read: `2026-12-21 08:00:00` on the status page,
//! `2026-12-21T08:00:00Z` in log lines and messages. Written out here (days to a civil date after
//! Howard Hinnant's `civil_from_days`) rather than pulling in a date crate's formatting for two
//! lines of text.

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn utc(unix: i64) -> String {
    let (year, month, day, rest) = civil(unix);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// Unix seconds as an RFC 3339 time in UTC: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    let mut text = utc(unix);
    text.replace_range(10..11, "T");
    text.push('Z');
    text
}

/// The proleptic Gregorian date of `unix`, and the seconds into that day.
fn civil(unix: i64) -> (i64, i64, i64, i64) {
    let (days, rest) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
    }
}
