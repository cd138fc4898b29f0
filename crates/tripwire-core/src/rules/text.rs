//! The text forms of rule values: durations (the one grammar flags, the config file and
//! rules share), fixed-point decimals, ratios and times of day — parsed into integers and
//! formatted back the way they are written.

use super::ir::SECONDS_PER_DAY;
use crate::txn::MICROS_PER_SECOND;

/// Parses a duration such as `10m`, `1h30m`, `45s`, `1500ms`, `7d`, `2w` into microseconds
/// (> 0). This is the one duration grammar: rule windows, flags and the config file all read
/// durations through it, so `1h` means the same everywhere.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    const HINT: &str = "use a number and a unit (ms, s, m, h, d, w), such as 10m or 1h30m";
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(HINT.to_string());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(HINT.to_string());
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| "is too long".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let micros_per_unit = match &rest[..unit_len] {
            "ms" => 1_000,
            "s" => MICROS_PER_SECOND,
            "m" => 60 * MICROS_PER_SECOND,
            "h" => 3_600 * MICROS_PER_SECOND,
            "d" => 86_400 * MICROS_PER_SECOND,
            "w" => 604_800 * MICROS_PER_SECOND,
            _ => return Err(HINT.to_string()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(micros_per_unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "is too long".to_string())?;
    }
    if total == 0 {
        return Err("must be longer than zero".to_string());
    }
    Ok(total)
}

/// [`parse_duration`] as a [`std::time::Duration`], for settings.
pub fn parse_std_duration(text: &str) -> Result<std::time::Duration, String> {
    let micros = parse_duration(text)?;
    Ok(std::time::Duration::from_micros(
        u64::try_from(micros).expect("parse_duration returns a positive number"),
    ))
}

/// Microseconds displayed the way windows are written: `10m`, `1h30m`, `2d`.
#[derive(Clone, Copy, Debug)]
pub struct DurationText(pub i64);

impl std::fmt::Display for DurationText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0;
        if micros < 0 {
            f.write_str("-")?;
        }
        let micros = micros.unsigned_abs();
        let mut secs = micros / MICROS_PER_SECOND as u64;
        if secs == 0 {
            return if micros == 0 {
                f.write_str("0s")
            } else {
                write!(f, "{}ms", micros / 1000)
            };
        }
        for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        Ok(())
    }
}

/// Formats microseconds the way windows are written: `10m`, `1h30m`, `2d`.
pub fn format_duration(micros: i64) -> String {
    DurationText(micros).to_string()
}

/// Parses a non-negative decimal into an integer with `scale` implied decimal places.
pub fn parse_fixed(text: &str, scale: u32) -> Option<i64> {
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty()
        || int_part.len() > 12
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (text.contains('.') && frac.is_empty())
        || frac.len() > scale as usize
    {
        return None;
    }
    let mut value: i64 = int_part.parse().ok()?;
    value = value.checked_mul(10i64.pow(scale))?;
    let mut place = 10i64.pow(scale);
    for b in frac.bytes() {
        place /= 10;
        value += i64::from(b - b'0') * place;
    }
    Some(value)
}

/// Parses `0.9` or `90%` into parts per million.
pub(super) fn parse_ratio(text: &str) -> Option<i64> {
    match text.strip_suffix('%') {
        Some(pct) => parse_fixed(pct.trim_end(), 4),
        None => parse_fixed(text, 6),
    }
}

/// Parses `HH:MM` or `HH:MM:SS` into seconds since midnight; `24:00` only as an end.
pub(super) fn parse_time_of_day(text: &str, is_end: bool) -> Option<u32> {
    let parts: Vec<&str> = text.trim().split(':').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let num = |p: &str| -> Option<u32> {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse().ok())
            .flatten()
    };
    let h = num(parts[0])?;
    let m = num(parts[1])?;
    let s = if parts.len() == 3 { num(parts[2])? } else { 0 };
    if m >= 60 || s >= 60 {
        return None;
    }
    let total = h * 3600 + m * 60 + s;
    match (h, is_end) {
        (24, true) if total == SECONDS_PER_DAY => Some(total),
        (0..=23, _) => Some(total),
        _ => None,
    }
}

/// Seconds since midnight displayed as `HH:MM` or `HH:MM:SS`.
#[derive(Clone, Copy, Debug)]
pub struct TimeOfDayText(pub u32);

impl std::fmt::Display for TimeOfDayText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

/// Formats seconds since midnight as `HH:MM` or `HH:MM:SS`.
pub fn format_time_of_day(secs: u32) -> String {
    TimeOfDayText(secs).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_microseconds() {
        assert_eq!(parse_duration("10m"), Ok(600 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("1h30m"), Ok(5_400 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("2d"), Ok(172_800 * MICROS_PER_SECOND));
        assert!(parse_duration("0m").is_err());
        assert_eq!(parse_duration("1500ms"), Ok(1_500_000));
        assert_eq!(parse_duration("1m30s"), Ok(90 * MICROS_PER_SECOND));
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("9223372036854w").is_err());
        assert!(parse_duration("5 s").is_err());
        assert_eq!(
            parse_std_duration("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("99999999999999999w").is_err());
    }

    #[test]
    fn durations_format_the_way_they_are_written() {
        for text in ["10m", "1h30m", "2d", "45s", "1d1h1m1s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn ratios_accept_fractions_and_percentages() {
        assert_eq!(parse_ratio("0.9"), Some(900_000));
        assert_eq!(parse_ratio("90%"), Some(900_000));
        assert_eq!(parse_ratio("90.5%"), Some(905_000));
        assert_eq!(parse_ratio("1"), Some(1_000_000));
        assert_eq!(parse_ratio("-0.9"), None);
        assert_eq!(parse_ratio("0.9x"), None);
    }

    #[test]
    fn times_of_day_allow_24_00_only_as_an_end() {
        assert_eq!(parse_time_of_day("01:00", false), Some(3600));
        assert_eq!(parse_time_of_day("04:59:59", false), Some(17_999));
        assert_eq!(parse_time_of_day("24:00", true), Some(86_400));
        assert_eq!(parse_time_of_day("24:00", false), None);
        assert_eq!(parse_time_of_day("1:00", false), None);
        assert_eq!(parse_time_of_day("12:60", false), None);
    }
}
