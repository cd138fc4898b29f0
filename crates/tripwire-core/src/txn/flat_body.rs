//! A fast reader for the decide body a gateway nearly always sends: one flat JSON object whose
//! strings have no escapes and whose values are strings, numbers, booleans or null.
//!
//! It reads such a body in one pass over its bytes, about a third of what the general serde
//! pass costs, and gives up (`false`) on anything else — an escape, a nested value, a key given
//! twice, a value of the wrong type, a syntax error — so that serde_json reads the body instead
//! and produces exactly the answer and the error it always did. What it accepts it reads as
//! serde_json would (the proptest below holds the two readers side by side on generated and
//! damaged bodies, and the `decide_request` fuzz target on whatever it finds).

use std::borrow::Cow;

use super::{DecideFields, bytes_below, bytes_equal};

/// A value of the flat shape.
enum Value<'a> {
    /// A string without escapes: its text between the quotes, and with them.
    Str {
        inner: &'a str,
        quoted: &'a str,
    },
    /// A number, as its JSON text.
    Number(&'a str),
    /// `true` or `false`.
    Bool,
    Null,
}

struct Scanner<'a> {
    /// The body, checked as UTF-8 once, so that every string in it is text at no further cost.
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    /// A string starting at the opening quote, without escapes or control characters: its
    /// text between the quotes.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        // Eight bytes at a time up to the first quote, backslash or control character, while
        // eight remain: ids and timestamps are 10 to 30 bytes, a byte at a time the most of
        // reading a body. The byte loop below then takes that byte, or the last few.
        let bytes = self.text.as_bytes();
        while let Some(word) = bytes.get(self.at..self.at + 8) {
            let special = special_bytes(word);
            if special != 0 {
                self.at += (special.trailing_zeros() / 8) as usize;
                break;
            }
            self.at += 8;
        }
        loop {
            match self.peek()? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => self.at += 1,
            }
        }
        // Both ends are at quotes, so on character boundaries.
        let inner = self.text.get(start..self.at)?;
        self.at += 1;
        Some(inner)
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    /// A number by the JSON grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.at;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.text.get(start..self.at)
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        let end = self.at + text.len();
        (self.text.as_bytes().get(self.at..end)? == text).then(|| self.at = end)
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => {
                let start = self.at;
                let inner = self.string()?;
                Some(Value::Str {
                    inner,
                    quoted: self.text.get(start..self.at)?,
                })
            }
            b'n' => self.literal(b"null").map(|()| Value::Null),
            b't' => self.literal(b"true").map(|()| Value::Bool),
            b'f' => self.literal(b"false").map(|()| Value::Bool),
            _ => self.number().map(Value::Number),
        }
    }
}

/// The bytes of `word` (eight) that end or spoil a plain string (a quote, a backslash, a byte
/// below 0x20), as the top bit of each; the lowest one set is exact (a byte above the first
/// such one may be flagged wrongly, by a borrow, which the caller never looks at: it stops at
/// the first).
#[inline(always)]
fn special_bytes(word: &[u8]) -> u64 {
    let x = u64::from_le_bytes(word.try_into().expect("a word is eight bytes"));
    bytes_equal(x, b'"') | bytes_equal(x, b'\\') | bytes_below(x, 0x20)
}

/// A known string field: a string (UTF-8) or null.
fn text<'a>(value: Value<'a>) -> Option<Option<Cow<'a, str>>> {
    match value {
        Value::Str { inner, .. } => Some(Some(Cow::Borrowed(inner))),
        Value::Null => Some(None),
        Value::Number(_) | Value::Bool => None,
    }
}

/// A field kept as raw JSON text: a string or a number, or null.
fn raw(value: Value<'_>) -> Option<Option<&str>> {
    match value {
        Value::Str { quoted, .. } => Some(Some(quoted)),
        Value::Number(text) => Some(Some(text)),
        Value::Null => Some(None),
        Value::Bool => None,
    }
}

/// A number of degrees: read here when it is a plain decimal of at most 15 digits
/// (then `digits / 10^k` is one correctly rounded division, as serde_json's own fast path
/// computes it), else by serde_json itself, so that it rounds as it always has.
fn degrees(value: Value<'_>) -> Option<Option<f64>> {
    match value {
        Value::Number(text) => Some(Some(
            plain_decimal(text).or_else(|| serde_json::from_str::<f64>(text).ok())?,
        )),
        Value::Null => Some(None),
        Value::Str { .. } | Value::Bool => None,
    }
}

/// `-?digits(.digits)?` with 1 to 15 digits (leading zeros counted), not zero, as an f64.
fn plain_decimal(text: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, body) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        bytes => (false, bytes),
    };
    // At most 15 digits in all, leading zeros included (a number with more, as rare as
    // "0.0000000000000001", goes to serde_json, which rounds it the same way), and a point.
    if body.len() > 16 {
        return None;
    }
    let (mut digits, mut point) = (0u64, None);
    for (i, &b) in body.iter().enumerate() {
        match b.wrapping_sub(b'0') {
            d @ 0..=9 => digits = digits * 10 + u64::from(d),
            _ if b == b'.' && point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    let fraction = point.map_or(0, |i| body.len() - i - 1);
    if digits == 0 || body.len() - usize::from(point.is_some()) > 15 {
        return None;
    }
    // Below 10^15 < 2^53: exact as an f64, and so is 10^k.
    let value = digits as f64 / POW10[fraction];
    Some(if negative { -value } else { value })
}

/// Reads a flat decide body into `out` (which comes as the default: a field the body leaves
/// out stays `None`), or gives up (`false`, `out` then half-written) when it is not of the
/// simple shape: the general reader then decides what it is. Written in place rather than
/// returned in an `Option`, whose move copied the fields once more every decision.
pub(super) fn read_into<'a>(body: &'a [u8], out: &mut DecideFields<'a>) -> bool {
    debug_assert!(*out == DecideFields::default(), "read into a fresh record");
    read(body, out).is_some()
}

fn read<'a>(body: &'a [u8], out: &mut DecideFields<'a>) -> Option<()> {
    // A body that is not UTF-8 may still be valid JSON (serde_json skips an unknown field's
    // string unread): the general reader decides.
    let mut scan = Scanner {
        text: std::str::from_utf8(body).ok()?,
        at: 0,
    };
    // One bit per known field: a field given twice goes to the general reader.
    let mut seen = 0u16;
    scan.skip_whitespace();
    scan.eat(b'{')?;
    scan.skip_whitespace();
    if scan.eat(b'}').is_none() {
        loop {
            let key = scan.string()?;
            scan.skip_whitespace();
            scan.eat(b':')?;
            scan.skip_whitespace();
            let value = scan.value()?;
            let bit = match key.as_bytes() {
                b"transaction_id" => {
                    out.transaction_id = text(value)?;
                    1
                }
                b"customer_id" => {
                    out.customer_id = text(value)?;
                    1 << 1
                }
                b"timestamp" => {
                    out.timestamp = text(value)?;
                    1 << 2
                }
                b"amount" => {
                    out.amount = raw(value)?;
                    1 << 3
                }
                b"currency" => {
                    out.currency = text(value)?;
                    1 << 4
                }
                b"lat" => {
                    out.lat = degrees(value)?;
                    1 << 5
                }
                b"lon" => {
                    out.lon = degrees(value)?;
                    1 << 6
                }
                b"credit_limit" => {
                    out.credit_limit = raw(value)?;
                    1 << 7
                }
                b"credit_granted_at" => {
                    out.credit_granted_at = text(value)?;
                    1 << 8
                }
                b"channel" => {
                    out.channel = text(value)?;
                    1 << 9
                }
                b"merchant_id" => {
                    out.merchant_id = text(value)?;
                    1 << 10
                }
                b"device_id" => {
                    out.device_id = text(value)?;
                    1 << 11
                }
                b"ip" => {
                    out.ip = text(value)?;
                    1 << 12
                }
                // An unknown field is skipped.
                _ => 0,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            scan.skip_whitespace();
            if scan.eat(b',').is_some() {
                scan.skip_whitespace();
                continue;
            }
            scan.eat(b'}')?;
            break;
        }
    }
    scan.skip_whitespace();
    (scan.at == body.len()).then_some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::txn::{DecideFields, read_decide_fields};

    /// The fields the fast reader reads, or `None` when it gives up.
    fn read(body: &[u8]) -> Option<DecideFields<'_>> {
        let mut fields = DecideFields::default();
        super::read_into(body, &mut fields).then_some(fields)
    }

    const KEYS: &[&str] = &[
        "transaction_id",
        "customer_id",
        "timestamp",
        "amount",
        "currency",
        "lat",
        "lon",
        "credit_limit",
        "credit_granted_at",
        "channel",
        "merchant_id",
        "device_id",
        "ip",
        "note",
        "tran\\u0073action_id",
        "caf\u{e9}",
    ];

    const VALUES: &[&str] = &[
        "\"t-1\"",
        "\"c\u{e9}\u{1F600}\"",
        "\"2026-03-01T02:15:00+08:00\"",
        "\"499.00\"",
        "499",
        "12.5",
        "\"\"",
        "\"a\\\"b\"",
        "\"tab\\there\"",
        "\"\\u00e9\"",
        "\"bad\u{1}control\"",
        "null",
        "true",
        "false",
        "31.2304",
        "-0",
        "-0.0",
        "0.1",
        "-121.4737",
        "1e3",
        "1E-2",
        "2.5e+1",
        "123456789012345.6",
        "1234567890123456",
        "0.000000000000000001",
        "1e400",
        "01",
        "1.",
        ".5",
        "-",
        "+1",
        "[1, 2]",
        "{\"a\": {}}",
        "\"CNY\"",
        "NaN",
    ];

    /// A JSON string of up to 40 pieces: mostly plain bytes, sometimes an escape, a control
    /// character, a multi-byte character or a byte next to a quote's or a backslash's, at any
    /// place in the eight-byte words the reader takes at once.
    fn long_string() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            8 => prop::sample::select(vec!["a", "0", "-", "T", ":", " ", "~", "!", "#", "]"]),
            1 => prop::sample::select(vec![
                "\\\"", "\\\\", "\\n", "\u{1}", "\u{1f}", "\t", "\u{7f}", "\u{e9}", "\u{1F600}",
            ]),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
    }

    /// A body built from keys, values and whitespace, sometimes damaged by one byte.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let ws = prop::sample::select(vec!["", "", " ", "\n\t ", "\r"]);
        // Mostly values every field takes, so that whole bodies are often valid.
        let value = prop_oneof![
            4 => prop::sample::select(vec!["\"t-1\"", "\"499.00\"", "null", "31.2304", "12"])
                .prop_map(String::from),
            3 => prop::sample::select(VALUES.to_vec()).prop_map(String::from),
            2 => long_string(),
        ];
        let pair = (
            prop::sample::select(KEYS.to_vec()),
            value,
            ws.clone(),
            ws.clone(),
        );
        (
            prop::collection::vec(pair, 0..7),
            ws,
            prop::option::weighted(0.3, (any::<prop::sample::Index>(), any::<u8>(), 0..3u8)),
            prop::sample::select(vec!["", "", "", ",", "}", " x", "\u{feff}"]),
        )
            .prop_map(|(pairs, ws, damage, tail)| {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(k, v, a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
                    .collect();
                let mut body = format!("{ws}{{{}}}{ws}{tail}", fields.join(",")).into_bytes();
                if let Some((at, byte, how)) = damage {
                    let i = at.index(body.len() + 1);
                    match how {
                        0 if i < body.len() => body[i] = byte,
                        1 => body.insert(i, byte),
                        _ if i < body.len() => {
                            body.remove(i);
                        }
                        _ => {}
                    }
                }
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// A plain decimal read here is the number serde_json reads, bit for bit.
        #[test]
        fn plain_decimals_read_as_serde_json_reads_them(
            negative in any::<bool>(),
            whole in "(0|[1-9][0-9]{0,15})",
            fraction in proptest::option::of("[0-9]{1,17}"),
        ) {
            let text = format!(
                "{}{whole}{}",
                if negative { "-" } else { "" },
                fraction.map_or(String::new(), |f| format!(".{f}"))
            );
            if let Some(value) = super::plain_decimal(&text) {
                let expected: f64 = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(value.to_bits(), expected.to_bits(), "{}", text);
            }
        }

        /// Whatever the fast reader accepts, serde_json reads the same.
        #[test]
        fn the_fast_reader_reads_what_serde_json_reads(body in body()) {
            if let Some(fast) = read(&body) {
                let general = read_decide_fields(&body);
                prop_assert!(general.is_ok(), "{:?}: {:?}", String::from_utf8_lossy(&body), general.err());
                prop_assert_eq!(Some(fast), general.ok());
            }
        }
    }

    #[test]
    fn a_gateways_everyday_body_takes_the_fast_reader() {
        let body = br#"{ "transaction_id": "t-1", "customer_id": "c-1",
            "timestamp": "2026-03-01T02:15:00+08:00", "amount": "499.00", "currency": "CNY",
            "lat": 31.2304, "lon": -121.4737, "channel": "app", "merchant_id": null,
            "trace": {"id": 1} }"#;
        // A nested unknown value is left to serde_json; without it the body is read here.
        assert!(read(body).is_none());
        let everyday =
            String::from_utf8_lossy(body).replace(",\n            \"trace\": {\"id\": 1} ", "");
        let fast = read(everyday.as_bytes()).expect("the simple shape");
        assert_eq!(Some(fast), read_decide_fields(everyday.as_bytes()).ok());
    }
}
