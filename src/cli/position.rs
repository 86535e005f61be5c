//! `--from` and `--until` of `strom consume`: where reading starts and stops.

use super::parse_duration_ms;
use crate::broker::now_ms;
use crate::client::Start;

/// What a position may be, for messages.
const FORMS: &str = "earliest, latest, an OFFSET, @TIMESTAMP_MS, -DURATION (like -10m) \
                     or an RFC 3339 time (like 2026-12-01T10:00:00Z)";

/// `earliest`, `latest`, `OFFSET`, `@TIMESTAMP_MS`, `-DURATION` or an RFC 3339 time.
pub fn parse_position(text: &str) -> Result<Start, String> {
    let bad = || format!("{text:?} is not {FORMS}");
    Ok(match text {
        "earliest" => Start::Earliest,
        "latest" => Start::Latest,
        t if t.starts_with('@') => Start::Timestamp(t[1..].parse().map_err(|_| bad())?),
        t if t.starts_with('-') => {
            Start::Timestamp(now_ms().saturating_sub(parse_duration_ms(&t[1..]).ok_or_else(bad)?))
        }
        t if t.bytes().all(|b| b.is_ascii_digit()) => Start::Offset(t.parse().map_err(|_| bad())?),
        t => Start::Timestamp(parse_time(t).ok_or_else(|| {
            if t.contains(':') && !t.ends_with(['Z', 'z']) && !has_offset(t) {
                format!("{text:?} has no time zone: add Z for UTC or an offset like +02:00")
            } else {
                bad()
            }
        })?),
    })
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Option<i64> {
    let time: jiff::Timestamp = text.parse().ok()?;
    Some(time.as_millisecond())
}

/// Whether a time ends in an offset such as `+02:00` or `-0500`.
fn has_offset(text: &str) -> bool {
    text.rsplit_once(['+', '-']).is_some_and(|(_, zone)| {
        zone.len() >= 4 && zone.bytes().all(|b| b.is_ascii_digit() || b == b':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(parse_position("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_position("latest"), Ok(Start::Latest));
        assert_eq!(parse_position("42"), Ok(Start::Offset(42)));
        assert_eq!(
            parse_position("@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        let Ok(Start::Timestamp(ts)) = parse_position("-10m") else {
            panic!()
        };
        assert!((now_ms() - 600_000 - ts).abs() < 5_000);
        for bad in [
            "",
            "-10",
            "-10y",
            "@x",
            "soon",
            "+5",
            "1e3",
            "99999999999999999999",
        ] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rfc3339_times_parse() {
        // 2026-12-01T10:00:00Z is 1,796,119,200 s after the epoch.
        let utc = 1_796_119_200_000;
        assert_eq!(
            parse_position("2026-12-01T10:00:00Z"),
            Ok(Start::Timestamp(utc))
        );
        assert_eq!(
            parse_position("2026-12-01T12:00:00+02:00"),
            Ok(Start::Timestamp(utc))
        );
        assert_eq!(
            parse_position("2026-12-01T10:00:00.250Z"),
            Ok(Start::Timestamp(utc + 250))
        );
        let Err(message) = parse_position("2026-12-01T10:00:00") else {
            panic!("a time without a zone is ambiguous")
        };
        assert!(message.contains("no time zone"), "{message}");
        for bad in ["2026-13-01T10:00:00Z", "2026-12-01", "2026-12-01T25:00:00Z"] {
            assert!(parse_position(bad).is_err(), "{bad}");
        }
    }
}
