//! Wall-clock times as the filter's configuration and Envoy's access log write them: RFC 3339
//! in UTC (`2026-12-01T00:00:00Z`, Envoy's `%START_TIME%`: `2026-12-01T00:00:00.123Z`).
//! Tests compare times on Envoy's clock rather than the client's, which a busy machine skews.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// `t` as RFC 3339 in UTC, to the second (rounded down).
pub fn rfc3339(t: SystemTime) -> String {
    let seconds = t
        .duration_since(UNIX_EPOCH)
        .expect("a time after 1970")
        .as_secs();
    let seconds = i64::try_from(seconds).expect("a time before the year 292 billion");
    let (days, second_of_day) = (
        seconds.div_euclid(SECONDS_PER_DAY),
        seconds.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Parses RFC 3339 in UTC (`Z` or `+00:00`), with an optional fraction of a second.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date_fields = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (
        date_fields.next()?.ok()?,
        date_fields.next()?.ok()?,
        date_fields.next()?.ok()?,
    );
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_fields = whole.splitn(3, ':').map(str::parse::<i64>);
    let (hour, minute, second) = (
        time_fields.next()?.ok()?,
        time_fields.next()?.ok()?,
        time_fields.next()?.ok()?,
    );
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction
            .chars()
            .chain("000000000".chars())
            .take(9)
            .collect();
        digits.parse::<u32>().ok()?
    };
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_780_272_000); // 2026-06-01T00:00:00Z
        assert_eq!(rfc3339(t), "2026-06-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-06-01T00:00:00Z"), Some(t));
        assert_eq!(
            parse_rfc3339("2026-06-01T00:00:01.250Z"),
            Some(t + Duration::from_millis(1250))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00+00:00"), Some(UNIX_EPOCH));
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(parse_rfc3339("2026-06-01 00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-06-01T00:00:00+02:00"), None);
    }
}
