//! Which bindings a routing key matches, as RabbitMQ's exchanges decide it. No state,
//! no I/O: the registry (`mod.rs`) asks here for each binding.
//!
//! - `direct`: the binding key equals the routing key.
//! - `topic`: both keys are words separated by `.`; in a binding key `*` stands for
//!   exactly one word and `#` for zero or more words. `eu.#` matches `eu`, `eu.orders`
//!   and `eu.orders.created`; `*.created` matches `orders.created` only.
//! - `fanout`: every binding, whatever the key (its bindings have empty keys).

use serde::{Deserialize, Serialize};

use crate::error::{quote, Error, Result};

/// Longest routing or binding key, in bytes (RabbitMQ's limit too).
pub const MAX_KEY_LEN: usize = 255;

/// How an exchange matches a publish's routing key against its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Direct,
    Topic,
    Fanout,
}

impl ExchangeType {
    pub const ALL: [ExchangeType; 3] = [
        ExchangeType::Direct,
        ExchangeType::Topic,
        ExchangeType::Fanout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Topic => "topic",
            ExchangeType::Fanout => "fanout",
        }
    }

    /// Whether a binding with `binding_key` takes a publish with `routing_key`.
    pub fn matches(self, binding_key: &str, routing_key: &str) -> bool {
        match self {
            ExchangeType::Direct => binding_key == routing_key,
            ExchangeType::Topic => topic_matches(binding_key, routing_key),
            ExchangeType::Fanout => true,
        }
    }

    /// Refuses a binding key this type cannot use.
    pub fn check_binding_key(self, key: &str) -> Result<()> {
        check_len("binding key", key)?;
        match self {
            ExchangeType::Fanout if !key.is_empty() => Err(Error::InvalidArgument(format!(
                "binding key {} on a fanout exchange: a fanout exchange sends every publish to every binding, so leave the key empty",
                quote(key)
            ))),
            ExchangeType::Topic => {
                if let Some(word) = key.split('.').find(|w| {
                    w.len() > 1 && (w.contains('*') || w.contains('#'))
                }) {
                    return Err(Error::InvalidArgument(format!(
                        "binding key {}: the word {} mixes a wildcard with other characters; `*` (one word) and `#` (zero or more words) stand alone between dots, as in `eu.*.created` or `eu.#`",
                        quote(key),
                        quote(word)
                    )));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl std::str::FromStr for ExchangeType {
    type Err = Error;
    fn from_str(s: &str) -> Result<ExchangeType> {
        ExchangeType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "exchange type {} is unknown: use direct, topic or fanout",
                    quote(s)
                ))
            })
    }
}

/// Refuses a routing key over `MAX_KEY_LEN`.
pub fn check_routing_key(key: &str) -> Result<()> {
    check_len("routing key", key)
}

fn check_len(what: &str, key: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "{what} of {} bytes; at most {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

/// A key's words. An empty key has none (as RabbitMQ splits one), so `#` takes it and
/// `*` does not; an empty word between dots (`a..b`) is a word.
fn words(key: &str) -> impl Iterator<Item = &str> {
    key.split('.').filter(move |_| !key.is_empty())
}

/// A topic exchange's match. `reached[j]`: the binding's words so far can match the
/// routing key's first `j` words. One pass per binding word, so a key of many `#`
/// costs words × words, never a backtracking search.
fn topic_matches(binding_key: &str, routing_key: &str) -> bool {
    let words: Vec<&str> = words(routing_key).collect();
    let mut reached = vec![false; words.len() + 1];
    reached[0] = true;
    for pattern in self::words(binding_key) {
        match pattern {
            "#" => {
                // Zero or more words: reachable from any earlier point.
                for j in 1..reached.len() {
                    reached[j] = reached[j] || reached[j - 1];
                }
            }
            _ => {
                for j in (1..reached.len()).rev() {
                    reached[j] = reached[j - 1] && (pattern == "*" || pattern == words[j - 1]);
                }
                reached[0] = false;
            }
        }
        if !reached.contains(&true) {
            return false;
        }
    }
    reached[words.len()]
}

#[cfg(test)]
mod tests {
    use super::ExchangeType::*;
    use super::*;

    #[test]
    fn topic_wildcards_match_words_as_rabbitmq_does() {
        let yes = [
            ("eu.#", "eu"),
            ("eu.#", "eu.orders"),
            ("eu.#", "eu.orders.created"),
            ("#", ""),
            ("#", "a.b.c"),
            ("*", "a"),
            ("a.*.c", "a..c"),
            ("*.created", "orders.created"),
            ("eu.*.created", "eu.orders.created"),
            ("#.created", "created"),
            ("#.created", "a.b.created"),
            ("a.#.b.#.c", "a.b.c"),
            ("a.#.b.#.c", "a.x.b.y.z.c"),
            ("#.#", "a"),
            ("a.b", "a.b"),
            ("", ""),
        ];
        for (binding, key) in yes {
            assert!(Topic.matches(binding, key), "{binding} should match {key}");
        }
        let no = [
            ("eu.#", "us.orders"),
            ("eu.#", "europe"),
            ("*.created", "created"),
            ("*.created", "a.b.created"),
            ("*", "a.b"),
            ("eu.*.created", "eu.created"),
            ("a.#.b.#.c", "a.c.b"),
            ("a.b", "a.b.c"),
            ("a.b", "a"),
            ("", "a"),
            ("a", ""),
            ("*", ""),
            ("a.*", "a"),
        ];
        for (binding, key) in no {
            assert!(
                !Topic.matches(binding, key),
                "{binding} should not match {key}"
            );
        }
    }

    #[test]
    fn direct_needs_the_same_key_and_fanout_takes_any() {
        assert!(Direct.matches("eu.orders", "eu.orders"));
        assert!(!Direct.matches("eu.#", "eu.orders"));
        assert!(!Direct.matches("eu", "EU"));
        assert!(Fanout.matches("", "anything.at.all"));
    }

    /// A topic match against a plain recursive definition, on keys over a small
    /// alphabet so that matches are common.
    #[test]
    fn topic_matching_agrees_with_a_recursive_definition() {
        fn reference(p: &[&str], k: &[&str]) -> bool {
            match p.split_first() {
                None => k.is_empty(),
                Some((&"#", rest)) => (0..=k.len()).any(|skip| reference(rest, &k[skip..])),
                Some((w, rest)) => {
                    !k.is_empty() && (*w == "*" || *w == k[0]) && reference(rest, &k[1..])
                }
            }
        }
        let words = ["a", "b", "*", "#"];
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..20_000 {
            let binding: Vec<&str> = (0..1 + next(5)).map(|_| words[next(4)]).collect();
            // Empty sometimes: a key of no words.
            let key: Vec<&str> = (0..next(5)).map(|_| words[next(2)]).collect();
            let (b, k) = (binding.join("."), key.join("."));
            assert_eq!(
                Topic.matches(&b, &k),
                reference(&binding, &key),
                "{b} against {k}"
            );
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(Topic.check_binding_key("eu.*.created").is_ok());
        assert!(Topic.check_binding_key("eu.#").is_ok());
        assert!(Topic.check_binding_key("eu.or*").is_err());
        assert!(Topic.check_binding_key("#eu").is_err());
        assert!(
            Direct.check_binding_key("eu.or*").is_ok(),
            "no wildcards in direct"
        );
        assert!(Fanout.check_binding_key("").is_ok());
        assert!(Fanout.check_binding_key("x").is_err());
        assert!(Direct.check_binding_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(Direct
            .check_binding_key(&"k".repeat(MAX_KEY_LEN + 1))
            .is_err());
        assert!(check_routing_key(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert_eq!("topic".parse::<ExchangeType>().unwrap(), Topic);
        assert!("headers".parse::<ExchangeType>().is_err());
    }
}
