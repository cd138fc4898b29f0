//! How a gateway's own payload maps onto a transaction, for proxy mode: path patterns that say
//! which requests are transactions, and JSON pointers (RFC 6901) that say where each decide
//! field is in the body.
//!
//! Mapping copies the raw JSON text of each pointed-to value into a decide body, so amounts keep
//! their exact digits and every field is then validated by the same parser as `/v1/decide`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The fields of a decide body, in the order they are written.
pub const DECIDE_FIELDS: [&str; 13] = [
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
];

/// A request path pattern: segments match literally, `*` matches any one segment, and a final
/// `**` matches whatever follows (including nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<String>,
    rest: bool,
}

impl PathPattern {
    /// Parses a pattern such as `/v2/payments/*/capture` or `/payments/**`.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("{text:?} must start with '/'"));
        };
        let mut segments: Vec<String> = body.split('/').map(str::to_string).collect();
        let rest = segments.last().is_some_and(|s| s == "**");
        if rest {
            segments.pop();
        }
        if segments.iter().any(|s| s == "**") {
            return Err(format!("{text:?}: `**` may only end a pattern"));
        }
        Ok(PathPattern { segments, rest })
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = body.split('/');
        for segment in &self.segments {
            match parts.next() {
                Some(part) if segment == "*" || segment == part => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Where each decide field is in a gateway's body. Empty: the body already uses the decide
/// field names.
#[derive(Clone, Debug, Default)]
pub struct FieldMapping {
    pointers: Vec<(&'static str, String)>,
}

/// Why a body could not be mapped.
#[derive(Debug, thiserror::Error)]
#[error("malformed JSON body: {0}")]
pub struct MappingError(serde_json::Error);

impl FieldMapping {
    /// Builds a mapping from decide field names to JSON pointers; on error returns the field
    /// and what is wrong.
    pub fn new(fields: &BTreeMap<String, String>) -> Result<FieldMapping, (String, String)> {
        let mut pointers = Vec::new();
        for (field, pointer) in fields {
            let Some(known) = DECIDE_FIELDS.iter().find(|f| **f == field.as_str()) else {
                return Err((
                    field.clone(),
                    format!("not a decide field; known: {}", DECIDE_FIELDS.join(", ")),
                ));
            };
            if !pointer.starts_with('/') {
                return Err((
                    field.clone(),
                    format!(
                        "{pointer:?} is not a JSON pointer: it must start with '/', such as \"/payer/id\""
                    ),
                ));
            }
            pointers.push((*known, pointer.clone()));
        }
        pointers.sort_by_key(|(f, _)| DECIDE_FIELDS.iter().position(|d| d == f));
        Ok(FieldMapping { pointers })
    }

    /// Whether the body already uses the decide field names.
    pub fn is_identity(&self) -> bool {
        self.pointers.is_empty()
    }

    /// The pointer a decide field is read from, if mapped.
    pub fn pointer(&self, field: &str) -> Option<&str> {
        self.pointers
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, p)| p.as_str())
    }

    /// Writes the decide body for a gateway body. Fields whose pointer finds nothing are left
    /// out, so that the decide parser reports them as missing.
    pub fn to_decide_body(&self, body: &[u8]) -> Result<Vec<u8>, MappingError> {
        let root: &RawValue = serde_json::from_slice(body).map_err(MappingError)?;
        let mut out = Vec::with_capacity(body.len().min(1024));
        out.push(b'{');
        let mut first = true;
        for (field, pointer) in &self.pointers {
            let Some(value) = resolve(root, pointer).map_err(MappingError)? else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }
}

/// Follows an RFC 6901 pointer through raw JSON without building a tree.
pub fn resolve<'a>(
    root: &'a RawValue,
    pointer: &str,
) -> Result<Option<&'a RawValue>, serde_json::Error> {
    let mut current = root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let text = current.get().trim_start();
        let next = if text.starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(current.get());
            de.deserialize_map(FindKey(&token))?
        } else if text.starts_with('[') {
            match token.parse::<usize>() {
                Ok(index) if token == index.to_string() => {
                    let mut de = serde_json::Deserializer::from_str(current.get());
                    de.deserialize_seq(FindIndex(index))?
                }
                _ => None,
            }
        } else {
            None
        };
        match next {
            Some(value) => current = value,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

struct FindKey<'k>(&'k str);

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key_seed(KeyIs(self.0))? {
            if key && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Deserializes a key and says whether it equals the wanted one, without allocating for
/// unescaped keys.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

struct FindIndex(usize);

impl<'de> Visitor<'de> for FindIndex {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if i == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments_and_tails() {
        let p = PathPattern::parse("/v2/payments/*/capture").unwrap();
        assert!(p.matches("/v2/payments/abc/capture"));
        assert!(!p.matches("/v2/payments/abc/capture/x"));
        assert!(!p.matches("/v2/payments/capture"));
        let p = PathPattern::parse("/payments/**").unwrap();
        assert!(p.matches("/payments/"));
        assert!(p.matches("/payments/a/b"));
        assert!(p.matches("/payments"));
        assert!(!p.matches("/pay"));
        assert!(PathPattern::parse("payments").is_err());
        assert!(PathPattern::parse("/a/**/b").is_err());
    }

    #[test]
    fn pointers_copy_exact_values_from_nested_payloads() {
        let fields: BTreeMap<String, String> = [
            ("transaction_id", "/id"),
            ("customer_id", "/payer/id"),
            ("amount", "/amount/value"),
            ("timestamp", "/created"),
            ("merchant_id", "/lines/1/merchant"),
            ("channel", "/meta/a~1b"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let mapping = FieldMapping::new(&fields).unwrap();
        let body = br#"{"id":"p-1","payer":{"id":"c\"9","name":"x"},"amount":{"value":499.10,"currency":"CNY"},
            "created":"2026-03-01T10:00:00Z","lines":[{"merchant":"m0"},{"merchant":"m1"}],"meta":{"a/b":"app"}}"#;
        let out = mapping.to_decide_body(body).unwrap();
        let txn = crate::txn::parse_decide(&out).unwrap();
        assert_eq!(txn.transaction_id, "p-1");
        assert_eq!(txn.customer_id, "c\"9");
        assert_eq!(txn.amount.minor(), 49_910);
        assert_eq!(txn.merchant_id.as_deref(), Some("m1"));
        assert_eq!(txn.channel.as_deref(), Some("app"));
    }

    #[test]
    fn a_missing_pointer_leaves_the_field_out() {
        let fields: BTreeMap<String, String> =
            [("customer_id".to_string(), "/payer/id".to_string())].into();
        let mapping = FieldMapping::new(&fields).unwrap();
        assert_eq!(mapping.to_decide_body(br#"{"payer":{}}"#).unwrap(), b"{}");
        assert_eq!(mapping.to_decide_body(br#"{"payer":[1]}"#).unwrap(), b"{}");
        assert!(mapping.to_decide_body(b"{not json").is_err());
    }
}
