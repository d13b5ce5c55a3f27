//! Go `time.ParseDuration` syntax, as echo-basic's `?delay=` takes it (`10s`, `1.5s`, `300ms`,
//! `1m30s`). A bare number is taken as milliseconds (an extension: Go refuses it).

use std::time::Duration;

/// Parses a Go duration string. Negative durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let bad = || format!("time: invalid duration {orig:?}");
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("negative duration {orig:?}"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s.parse().map_err(|_| bad())?;
        return Ok(Duration::from_millis(ms));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {orig:?}"))?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("time: unknown unit {other:?} in duration {orig:?}")),
        };
        total += value * nanos_per;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_go_duration("300ms"), Ok(ms(300)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("750"), Ok(ms(750)));
    }

    #[test]
    fn refuses_garbage() {
        for s in ["", "s", "1x", "-1s", "1.2.3s", "abc", "1s2"] {
            assert!(parse_go_duration(s).is_err(), "{s:?} should be refused");
        }
    }
}
