//! The quotas file (`quotas`): how many bytes a second each client may produce and
//! fetch. One line a client, `PRINCIPAL KIND=RATE...`:
//!
//! ```text
//! # who        bytes a second
//! *            produce=10MiB  fetch=50MiB
//! orders-api   produce=100MiB
//! ops          produce=none   fetch=none
//! ```
//!
//! - PRINCIPAL: a token's name in `auth_tokens` (or, with mutual TLS and no tokens,
//!   the common name of the client's certificate), or `*`: every other client, each
//!   on its own (a client without a principal is its IP address).
//! - KIND: `produce` (Produce, ProduceStream and Publish messages, Kafka Produce
//!   requests: their size on the wire) or `fetch` (the records of Fetch, Subscribe,
//!   ShareFetch and ShareStream responses, Kafka Fetch responses).
//! - RATE: bytes a second, a number with an optional `KiB`, `MiB` or `GiB`, or `none`
//!   for no limit. A kind a named line leaves out is the `*` line's.
//!
//! Without the file, or without a line or a `*` for a client, nothing is limited.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Bytes a second for each kind of traffic; None: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub produce: Option<u64>,
    pub fetch: Option<u64>,
}

/// The file, read and checked: every named principal's rates (with the `*` line's
/// filling in what its own line leaves out) and the `*` line's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub named: HashMap<String, Rates>,
    pub anyone: Rates,
}

impl Rates {
    /// The rate of `flow`, if it is limited.
    pub fn of(&self, flow: super::Flow) -> Option<u64> {
        match flow {
            super::Flow::Produce => self.produce,
            super::Flow::Fetch => self.fetch,
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
            "quotas {} line {line}: {what}; each line is `PRINCIPAL produce=RATE fetch=RATE`, RATE bytes a second (e.g. 10MiB) or none",
            file.display()
        )))
}

fn parse(text: &str) -> std::result::Result<Table, (usize, String)> {
    let mut lines: HashMap<String, [Setting; 2]> = HashMap::new();
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
        let mut settings = [Setting::Unset; 2];
        let mut any = false;
        for field in fields {
            let (kind, rate) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not KIND=RATE")))?;
            let slot = match kind {
                "produce" => &mut settings[0],
                "fetch" => &mut settings[1],
                _ => return Err(bad(format!("{kind:?} is not a kind: produce or fetch"))),
            };
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
    let anyone = lines.remove("*").map_or(Rates::default(), |[p, f]| Rates {
        produce: resolve(p, None),
        fetch: resolve(f, None),
    });
    let named = lines
        .into_iter()
        .map(|(who, [p, f])| {
            let rates = Rates {
                produce: resolve(p, anyone.produce),
                fetch: resolve(f, anyone.fetch),
            };
            (who, rates)
        })
        .collect();
    Ok(Table { named, anyone })
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
                fetch: Some(50 << 20)
            }
        );
        assert_eq!(rates(Some("stranger")), rates(None));
        assert_eq!(
            rates(Some("orders")),
            Rates {
                produce: Some(100 << 20),
                fetch: Some(50 << 20)
            }
        );
        assert_eq!(rates(Some("ops")), Rates::default());
        assert_eq!(
            rates(Some("small")),
            Rates {
                produce: Some(10 << 20),
                fetch: Some(2048)
            }
        );
        // Without a `*` line, a client no line names is not limited.
        let table = parse("orders produce=1KiB\n").unwrap();
        assert_eq!(table.rates(Some("other")), Rates::default());
        assert_eq!(table.rates(Some("orders")).produce, Some(1024));
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
