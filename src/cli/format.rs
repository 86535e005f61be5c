//! How `strom consume` prints a record: `--format text`, `json`, or a kcat-style
//! template such as `'%k\t%s\n'`.
//!
//! Text and templates print keys, values and header values as the bytes they are
//! (what a pipeline wants back). JSON must be text, so bytes that are not UTF-8 are
//! printed as base64 and marked (`"value_encoding":"base64"`) rather than mangled.

use std::io::Write;

use base64::Engine;

use crate::client::ConsumedRecord;

/// What an absent key prints as in text and templates (kcat's choice with `-Z`); an
/// empty key prints as nothing, and `%K` (-1 or 0) tells the two apart for certain.
pub const NULL_KEY: &[u8] = b"NULL";

/// The template tokens, for `--help` and messages.
pub const TOKENS: &str = "%t topic, %p partition, %o offset, %T timestamp (ms), %k key, \
    %K key length (-1 if none), %s value, %S value length, %h headers (name=value,...), %% a %; \
    escapes \\n \\t \\r \\\\";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// The value; with `print_key`, the key, a tab, then the value.
    Text { print_key: bool },
    /// One JSON object per line.
    Json,
    /// A template, printed once per record as it is (no newline added).
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    KeyLength,
    Value,
    ValueLength,
    Headers,
}

impl Format {
    /// `text`, `json` or a template with at least one `%` token.
    pub fn parse(text: &str, print_key: bool) -> Result<Format, String> {
        match text {
            "text" => Ok(Format::Text { print_key }),
            "json" => Ok(Format::Json),
            // Without a token every record would print the same: more likely a typo.
            t if !t.contains('%') => Err(format!(
                "--format {t:?}: use text, json or a template such as '%k\\t%s\\n'"
            )),
            t => parse_template(t)
                .map(Format::Template)
                .map_err(|e| format!("--format {t:?}: {e}")),
        }
    }

    /// Appends one record, as this format prints it, to `out`.
    pub fn write(&self, out: &mut Vec<u8>, topic: &str, record: &ConsumedRecord) {
        match self {
            Format::Text { print_key } => {
                if *print_key {
                    out.extend_from_slice(record.key.as_deref().unwrap_or(NULL_KEY));
                    out.push(b'\t');
                }
                out.extend_from_slice(&record.value);
                out.push(b'\n');
            }
            Format::Json => write_json(out, topic, record),
            Format::Template(pieces) => {
                for piece in pieces {
                    write_piece(out, piece, topic, record);
                }
            }
        }
    }
}

fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let token = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('T') => Piece::Timestamp,
                Some('k') => Piece::Key,
                Some('K') => Piece::KeyLength,
                Some('s') => Piece::Value,
                Some('S') => Piece::ValueLength,
                Some('h') => Piece::Headers,
                Some('%') => {
                    literal.push(b'%');
                    continue;
                }
                Some(other) => return Err(format!("%{other} is not a token; tokens: {TOKENS}")),
                None => return Err("it ends in a lone %; write %% for a %".into()),
            },
            '\\' => {
                literal.push(match chars.next() {
                    Some('n') => b'\n',
                    Some('t') => b'\t',
                    Some('r') => b'\r',
                    Some('\\') => b'\\',
                    Some(other) => {
                        return Err(format!(
                            "\\{other} is not an escape; use \\n \\t \\r or \\\\"
                        ))
                    }
                    None => return Err("it ends in a lone \\; write \\\\ for a \\".into()),
                });
                continue;
            }
            c => {
                let mut utf8 = [0; 4];
                literal.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
        };
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(token);
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn write_piece(out: &mut Vec<u8>, piece: &Piece, topic: &str, record: &ConsumedRecord) {
    // Writing to a Vec cannot fail.
    let _ = match piece {
        Piece::Literal(bytes) => out.write_all(bytes),
        Piece::Topic => out.write_all(topic.as_bytes()),
        Piece::Partition => write!(out, "{}", record.partition),
        Piece::Offset => write!(out, "{}", record.offset),
        Piece::Timestamp => write!(out, "{}", record.timestamp_ms),
        Piece::Key => out.write_all(record.key.as_deref().unwrap_or(NULL_KEY)),
        Piece::KeyLength => match &record.key {
            Some(key) => write!(out, "{}", key.len()),
            None => out.write_all(b"-1"),
        },
        Piece::Value => out.write_all(&record.value),
        Piece::ValueLength => write!(out, "{}", record.value.len()),
        Piece::Headers => {
            for (i, (name, value)) in record.headers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(value);
            }
            Ok(())
        }
    };
}

/// Appends `bytes` as a JSON string: as text when UTF-8, else as base64. Returns
/// whether it was base64.
fn json_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let (text, base64) = match std::str::from_utf8(bytes) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
            true,
        ),
    };
    json_str(out, &text);
    base64
}

fn json_str(out: &mut Vec<u8>, text: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `{"topic":…,"partition":…,"offset":…,"timestamp_ms":…,"key":…,"value":…,"headers":[…]}`;
/// `key` is null when absent, and `key_encoding`/`value_encoding` are `"base64"` only
/// when those bytes are not UTF-8. Each header is `[name, value]`, with a third element
/// `"base64"` when the value is not UTF-8.
fn write_json(out: &mut Vec<u8>, topic: &str, record: &ConsumedRecord) {
    out.extend_from_slice(b"{\"topic\":");
    json_str(out, topic);
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp_ms\":{},\"key\":",
        record.partition, record.offset, record.timestamp_ms
    );
    match &record.key {
        Some(key) => {
            if json_bytes(out, key) {
                out.extend_from_slice(b",\"key_encoding\":\"base64\"");
            }
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value\":");
    if json_bytes(out, &record.value) {
        out.extend_from_slice(b",\"value_encoding\":\"base64\"");
    }
    out.extend_from_slice(b",\"headers\":[");
    for (i, (name, value)) in record.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        json_str(out, name);
        out.push(b',');
        if json_bytes(out, value) {
            out.extend_from_slice(b",\"base64\"");
        }
        out.push(b']');
    }
    out.extend_from_slice(b"]}\n");
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> ConsumedRecord {
        ConsumedRecord {
            partition: 2,
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
                .collect(),
        }
    }

    fn print(format: &str, record: &ConsumedRecord) -> Vec<u8> {
        let mut out = Vec::new();
        Format::parse(format, false)
            .unwrap()
            .write(&mut out, "logs", record);
        out
    }

    #[test]
    fn templates_print_every_token() {
        let r = record(Some(b"user-1"), b"paid", &[("app", b"web"), ("v", b"2")]);
        assert_eq!(
            print(r"%t/%p/%o@%T %k(%K)=%s(%S) [%h] 100%%\n", &r),
            b"logs/2/7@1700000000000 user-1(6)=paid(4) [app=web,v=2] 100%\n"
        );
        // No newline unless the template has one, as in kcat.
        assert_eq!(print("%s", &r), b"paid");
        assert_eq!(print(r"%s\t%k\\", &r), b"paid\tuser-1\\");
    }

    #[test]
    fn absent_and_empty_keys_differ() {
        let absent = record(None, b"v", &[]);
        let empty = record(Some(b""), b"v", &[]);
        assert_eq!(print("%k|%K", &absent), b"NULL|-1");
        assert_eq!(print("%k|%K", &empty), b"|0");
        let mut out = Vec::new();
        Format::parse("text", true)
            .unwrap()
            .write(&mut out, "logs", &absent);
        assert_eq!(out, b"NULL\tv\n");
        assert!(String::from_utf8(print("json", &absent))
            .unwrap()
            .contains("\"key\":null"));
        assert!(String::from_utf8(print("json", &empty))
            .unwrap()
            .contains("\"key\":\"\""));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["jsn", "%", "%x", "%s\\", r"%s\q", ""] {
            let err = Format::parse(bad, false).unwrap_err();
            assert!(err.starts_with("--format"), "{bad}: {err}");
        }
    }

    #[test]
    fn json_marks_base64_only_where_needed() {
        let r = record(
            Some(b"\xff\x00"),
            b"\xfe",
            &[("bin", b"\x80"), ("txt", b"ok")],
        );
        let line = print("json", &r);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["topic"], "logs");
        assert_eq!(v["key"], "/wA=");
        assert_eq!(v["key_encoding"], "base64");
        assert_eq!(v["value"], "/g==");
        assert_eq!(v["value_encoding"], "base64");
        assert_eq!(
            v["headers"][0],
            serde_json::json!(["bin", "gA==", "base64"])
        );
        assert_eq!(v["headers"][1], serde_json::json!(["txt", "ok"]));

        let plain = record(Some("ключ".as_bytes()), b"a \"quoted\"\nline", &[]);
        let v: serde_json::Value = serde_json::from_slice(&print("json", &plain)).unwrap();
        assert_eq!(v["key"], "ключ");
        assert_eq!(v["value"], "a \"quoted\"\nline");
        assert!(v.get("key_encoding").is_none() && v.get("value_encoding").is_none());
    }
}
