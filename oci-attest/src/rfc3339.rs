//! Times as Go's `time.RFC3339Nano` writes them, the form every time in the attestation takes.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC time as Go's `time.RFC3339Nano` writes it: nanoseconds with trailing zeros trimmed
/// (no fraction at all when zero), `Z` suffix.
///
/// Hand-written because no date crate is a dependency and the conversion is a dozen lines
/// (days → civil date after Howard Hinnant's `civil_from_days`).
pub fn rfc3339_nano(time: SystemTime) -> String {
    // Times before 1970 do not occur (clocks of running processes); clamp rather than fail.
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    );
    let nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(seconds, nanos)
    }

    #[test]
    fn times_are_go_rfc3339nano_in_utc() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // `date -u -d @1700000000` = 2023-11-14T22:13:20Z
        assert_eq!(rfc3339_nano(at(1_700_000_000, 0)), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 120_000_000)),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(
            rfc3339_nano(at(1_700_000_000, 1)),
            "2023-11-14T22:13:20.000000001Z"
        );
        // Leap day and a far date: 2024-02-29T00:00:00Z = 1709164800; 2100-03-01 = 4107542400.
        assert_eq!(rfc3339_nano(at(1_709_164_800, 0)), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339_nano(at(4_107_542_400, 0)), "2100-03-01T00:00:00Z");
    }
}
