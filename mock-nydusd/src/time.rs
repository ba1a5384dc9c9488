//! nydusd's `mounted_time` text: `YYYY-MM-DD HH:MM:SS.fffffffff +00:00:00` in UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nydusd's human-readable form.
pub fn human_utc_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    human_utc(now.as_secs() as i64, now.subsec_nanos())
}

/// `secs` since the epoch plus `nanos`, in nydusd's human-readable form.
pub fn human_utc(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{nanos:09} +00:00:00", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(human_utc(0, 0), "1970-01-01 00:00:00.000000000 +00:00:00");
        assert_eq!(human_utc(1_735_787_045, 123_456_789), "2025-01-02 03:04:05.123456789 +00:00:00");
        assert_eq!(human_utc(951_782_400, 0), "2000-02-29 00:00:00.000000000 +00:00:00");
    }
}
