//! The quotas file (`quotas`): how many bytes a second each client may produce and
//! fetch, and how many requests it may make. One line a client, `PRINCIPAL KIND=RATE...`:
//!
//! ```text
//! # who        bytes a second               requests a second
//! *            produce=10MiB  fetch=50MiB   requests=1000
//! orders-api   produce=100MiB
//! ops          produce=none   fetch=none    requests=none
//! ```
//!
//! - PRINCIPAL: a token's name in `auth_tokens` (or, with mutual TLS and no tokens,
//!   the common name of the client's certificate), or `*`: every other client, each
//!   on its own (a client without a principal is its IP address).
//! - KIND: `produce` (Produce, ProduceStream and Publish messages, Kafka Produce
//!   requests: their size on the wire, and what storing them, or a fan-out, writes
//!   beyond it), `fetch` (the records of Fetch, Subscribe, ShareFetch and
//!   ShareStream responses, Kafka Fetch responses), or `requests` (gRPC calls,
//!   health checks and reflection aside, and Kafka requests).
//! - RATE: for bytes, a number with an optional `KiB`, `MiB` or `GiB`; for requests, a
//!   number; or `none` for no limit. A kind a named line leaves out is the `*` line's.
//!
//! Without the file, or without a line or a `*` for a client, nothing is limited.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Bytes (requests) a second for each kind of traffic; None: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub produce: Option<u64>,
    pub fetch: Option<u64>,
    pub requests: Option<u64>,
}

/// The file, read and checked: every named principal's rates (with the `*` line's
/// filling in what its own line leaves out) and the `*` line's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub named: HashMap<String, Rates>,
    pub anyone: Rates,
    /// Whether any client's requests are limited: if not, a call that neither
    /// produces nor fetches does not look its client up.
    pub requests_limited: bool,
}

impl Rates {
    /// The rate of `flow`, if it is limited.
    pub fn of(&self, flow: super::Flow) -> Option<u64> {
        match flow {
            super::Flow::Produce => self.produce,
            super::Flow::Fetch => self.fetch,
            super::Flow::Requests => self.requests,
        }
    }
}

impl Table {
    /// The rates of `principal`, or of a client without one.
    pub fn rates(&self, principal: Option<&str>) -> Rates {
        principal
            .and_then(|p| self.named.get(p))
            .copied()
            .unwrap_or(self.anyone)
    }
}

/// A line's setting of one kind.
#[derive(Clone, Copy)]
enum Setting {
    /// Left out: the `*` line's.
    Unset,
    Unlimited,
    Rate(u64),
}

pub fn read(file: &Path) -> Result<Table> {
    parse(&std::fs::read_to_string(file).at(file)?)
        .map_err(|(line, what)| Error::InvalidArgument(format!(
            "quotas {} line {line}: {what}; each line is `PRINCIPAL produce=RATE fetch=RATE requests=N`, RATE bytes a second (e.g. 10MiB), N requests a second, or none",
            file.display()
        )))
}

fn parse(text: &str) -> std::result::Result<Table, (usize, String)> {
    let mut lines: HashMap<String, [Setting; 3]> = HashMap::new();
    for (at, line) in text.lines().enumerate() {
        let bad = |what: String| (at + 1, what);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let who = fields.next().expect("a line that is not blank has a field");
        if who != "*" && who.contains('*') {
            return Err(bad(format!("{who:?}: a principal is a name, or * alone")));
        }
        let mut settings = [Setting::Unset; 3];
        let mut any = false;
        for field in fields {
            let (kind, rate) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not KIND=RATE")))?;
            let slot = match kind {
                "produce" => &mut settings[0],
                "fetch" => &mut settings[1],
                "requests" => &mut settings[2],
                _ => {
                    let kinds = "produce, fetch or requests";
                    return Err(bad(format!("{kind:?} is not a kind: {kinds}")));
                }
            };
            // Requests are counted, not measured in bytes.
            if kind == "requests" && !rate.bytes().all(|b| b.is_ascii_digit()) && rate != "none" {
                return Err(bad(format!(
                    "requests={rate}: a number of requests a second"
                )));
            }
            if !matches!(slot, Setting::Unset) {
                return Err(bad(format!("{kind} given twice")));
            }
            *slot = parse_rate(rate).ok_or_else(|| bad(format!("{rate:?} is not a rate")))?;
            any = true;
        }
        if !any {
            return Err(bad(format!("no rate for {who}")));
        }
        if lines.insert(who.to_string(), settings).is_some() {
            return Err(bad(format!("{who} has a line already")));
        }
    }
    let resolve = |setting: Setting, default: Option<u64>| match setting {
        Setting::Unset => default,
        Setting::Unlimited => None,
        Setting::Rate(rate) => Some(rate),
    };
    let anyone = lines
        .remove("*")
        .map_or(Rates::default(), |[p, f, r]| Rates {
            produce: resolve(p, None),
            fetch: resolve(f, None),
            requests: resolve(r, None),
        });
    let named: HashMap<String, Rates> = lines
        .into_iter()
        .map(|(who, [p, f, r])| {
            let rates = Rates {
                produce: resolve(p, anyone.produce),
                fetch: resolve(f, anyone.fetch),
                requests: resolve(r, anyone.requests),
            };
            (who, rates)
        })
        .collect();
    let requests_limited =
        anyone.requests.is_some() || named.values().any(|r| r.requests.is_some());
    Ok(Table {
        named,
        anyone,
        requests_limited,
    })
}

/// `none`, or a positive number of bytes with an optional binary unit.
fn parse_rate(text: &str) -> Option<Setting> {
    if text == "none" {
        return Some(Setting::Unlimited);
    }
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(scale)
        .filter(|&rate| rate > 0)
        .map(Setting::Rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_lines_take_what_they_leave_out_from_the_star_line() {
        let table = parse(
            "# who rates\n*  produce=10MiB fetch=50MiB\n\norders produce=100MiB\nops produce=none fetch=none\nsmall fetch=2048\n",
        )
        .unwrap();
        let rates = |who: Option<&str>| table.rates(who);
        assert_eq!(
            rates(None),
            Rates {
                produce: Some(10 << 20),
                fetch: Some(50 << 20),
                requests: None
            }
        );
        assert_eq!(rates(Some("stranger")), rates(None));
        assert_eq!(
            rates(Some("orders")),
            Rates {
                produce: Some(100 << 20),
                fetch: Some(50 << 20),
                requests: None
            }
        );
        assert_eq!(rates(Some("ops")), Rates::default());
        assert_eq!(
            rates(Some("small")),
            Rates {
                produce: Some(10 << 20),
                fetch: Some(2048),
                requests: None
            }
        );
        // Without a `*` line, a client no line names is not limited.
        let table = parse("orders produce=1KiB\n").unwrap();
        assert_eq!(table.rates(Some("other")), Rates::default());
        assert_eq!(table.rates(Some("orders")).produce, Some(1024));
    }

    #[test]
    fn requests_are_a_count_and_named_lines_inherit_them_too() {
        let table = parse("* requests=100\nops requests=none\nbulk produce=1MiB\n").unwrap();
        assert!(table.requests_limited);
        assert_eq!(table.rates(None).requests, Some(100));
        assert_eq!(table.rates(Some("ops")).requests, None);
        assert_eq!(table.rates(Some("bulk")).requests, Some(100));
        assert!(!parse("* produce=1MiB\n").unwrap().requests_limited);
        assert!(parse("a requests=7\n").unwrap().requests_limited);
        let (_, what) = parse("a requests=1KiB\n").unwrap_err();
        assert!(what.contains("a number of requests"), "{what}");
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        for (text, line, says) in [
            ("a produce=1\nb\n", 2, "no rate"),
            ("a produce\n", 1, "KIND=RATE"),
            ("a read=1\n", 1, "not a kind"),
            ("a produce=1 produce=2\n", 1, "twice"),
            ("a produce=0\n", 1, "not a rate"),
            ("a produce=-1\n", 1, "not a rate"),
            ("a produce=1MB\n", 1, "not a rate"),
            ("a produce=99999999999999GiB\n", 1, "not a rate"),
            ("a fetch=1\na produce=1\n", 2, "already"),
            ("ops* fetch=1\n", 1, "a name"),
        ] {
            let (at, what) = parse(text).unwrap_err();
            assert_eq!(at, line, "{text:?}");
            assert!(what.contains(says), "{text:?}: {what}");
        }
        assert_eq!(parse("").unwrap(), Table::default());
    }
}
