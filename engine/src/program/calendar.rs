//! Calendar arithmetic on timestamps (microseconds since the Unix epoch, UTC, proleptic
//! Gregorian calendar) for the program's `extract` and `add_months` instructions: the days
//! and civil dates convert by the era-of-400-years method (H. Hinnant, "chrono-Compatible
//! Low-Level Date Algorithms"), with floor division so that times before 1970 work too.

/// A part of a timestamp that `extract` takes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeField {
    /// The year (e.g. 2026).
    Year,
    /// 1 to 4.
    Quarter,
    /// 1 to 12.
    Month,
    /// Day of the month, 1 to 31.
    Day,
    /// 0 to 23.
    Hour,
    /// 0 to 59.
    Minute,
    /// 0 to 59.
    Second,
    /// 0 to 999,999 (within the second).
    Microsecond,
}

impl TimeField {
    /// Every field, in wire order (the byte is the index).
    pub const ALL: [TimeField; 8] = [
        TimeField::Year,
        TimeField::Quarter,
        TimeField::Month,
        TimeField::Day,
        TimeField::Hour,
        TimeField::Minute,
        TimeField::Second,
        TimeField::Microsecond,
    ];

    /// The field as SQL writes it.
    pub fn name(self) -> &'static str {
        match self {
            TimeField::Year => "YEAR",
            TimeField::Quarter => "QUARTER",
            TimeField::Month => "MONTH",
            TimeField::Day => "DAY",
            TimeField::Hour => "HOUR",
            TimeField::Minute => "MINUTE",
            TimeField::Second => "SECOND",
            TimeField::Microsecond => "MICROSECOND",
        }
    }

    /// The field named `name` (any case).
    pub fn from_name(name: &str) -> Option<TimeField> {
        TimeField::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days from 1970-01-01 to (year, month 1-12, day).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The field of timestamp `micros`.
pub fn extract(micros: i64, field: TimeField) -> i64 {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    match field {
        TimeField::Year => year,
        TimeField::Quarter => (month + 2) / 3,
        TimeField::Month => month,
        TimeField::Day => day,
        TimeField::Hour => in_day / 3_600_000_000,
        TimeField::Minute => in_day / 60_000_000 % 60,
        TimeField::Second => in_day / 1_000_000 % 60,
        TimeField::Microsecond => in_day % 1_000_000,
    }
}

/// `micros` plus `months` calendar months, the day of the month cut to the new month's last
/// day (Jan 31 + 1 month = Feb 28 or 29), as MySQL's DATE_ADD does; `None` on overflow.
pub fn add_months(micros: i64, months: i64) -> Option<i64> {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let index = year.checked_mul(12)?.checked_add(month - 1)?.checked_add(months)?;
    // Keep the date arithmetic far from i64's edges (about 292,000 years of microseconds).
    if !(-300_000 * 12..=300_000 * 12).contains(&index) {
        return None;
    }
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let day = day.min(days_in_month(year, month));
    days_from_civil(year, month, day).checked_mul(MICROS_PER_DAY)?.checked_add(in_day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn days_and_civil_dates_round_trip_over_thirty_thousand_years() {
        let mut previous = civil_from_days(-6_000_000);
        for days in -6_000_000 + 1..6_000_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            // Consecutive days: the next day of the month, or the first of the next month.
            let (py, pm, pd) = previous;
            assert!((y, m, d) == (py, pm, pd + 1) || (d == 1 && (m == pm + 1 || (m == 1 && y == py + 1))));
            previous = (y, m, d);
        }
    }

    #[test]
    fn fields_of_known_timestamps() {
        // 2026-12-07 23:29:44.123456 UTC
        let t = 1_796_686_184_123_456;
        let fields: Vec<i64> = TimeField::ALL.iter().map(|f| extract(t, *f)).collect();
        assert_eq!(fields, vec![2026, 4, 12, 7, 23, 29, 44, 123_456]);
        // One microsecond before the epoch: 1969-12-31 23:59:59.999999.
        let fields: Vec<i64> = TimeField::ALL.iter().map(|f| extract(-1, *f)).collect();
        assert_eq!(fields, vec![1969, 4, 12, 31, 23, 59, 59, 999_999]);
    }

    #[test]
    fn adding_months_keeps_the_time_and_cuts_the_day_to_the_month() {
        let jan31 = days_from_civil(2024, 1, 31) * MICROS_PER_DAY + 5 * HOUR;
        let feb29 = days_from_civil(2024, 2, 29) * MICROS_PER_DAY + 5 * HOUR;
        assert_eq!(add_months(jan31, 1), Some(feb29));
        assert_eq!(add_months(jan31, 13), Some(days_from_civil(2025, 2, 28) * MICROS_PER_DAY + 5 * HOUR));
        assert_eq!(add_months(jan31, -2), Some(days_from_civil(2023, 11, 30) * MICROS_PER_DAY + 5 * HOUR));
        assert_eq!(add_months(0, 12 * 400), Some(days_from_civil(2370, 1, 1) * MICROS_PER_DAY));
        assert_eq!(add_months(0, i64::MAX), None);
        assert_eq!(add_months(i64::MAX, 1), None);
    }
}
