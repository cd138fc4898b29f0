//! The JSON answer to `POST /v1/decide`, written straight into the response buffer.
//!
//! Every decision pays for its answer, so the common one is written by hand: fixed keys as
//! byte literals, integers by `itoa`, strings copied as they are unless they hold a byte JSON
//! must escape. What comes out is byte for byte what serde_json writes for the same answer
//! (the tests below hold the two side by side); only strings that need escaping, and the rare
//! duplicate answer, go through serde_json itself.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::engine::explain::Explanation;
use crate::engine::{self, Decision};
use crate::live_rules::LoadedRules;
use crate::rules::Action;
use crate::txn::{self, EventTime, Txn};

/// Whether a string can be written between quotes as it is: no quote, no backslash, no
/// control character (the bytes JSON requires escaped; non-ASCII text is written as UTF-8).
#[inline]
fn needs_no_escape(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends what is written to it as the contents of a JSON string (no quotes), escaping each
/// piece as serde_json would.
struct StringContents<'a>(&'a mut Vec<u8>);

impl fmt::Write for StringContents<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if needs_no_escape(s) {
            self.0.extend_from_slice(s.as_bytes());
        } else {
            let quoted = serde_json::to_vec(s).map_err(|_| fmt::Error)?;
            self.0.extend_from_slice(&quoted[1..quoted.len() - 1]);
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string.
#[inline]
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    StringContents(out)
        .write_str(s)
        .expect("writing to a Vec cannot fail");
    out.push(b'"');
}

#[inline]
fn push_integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends the reasons (or shadow hits) of a decision: `[{"rule":…,"action":…,"message":…}]`.
fn push_reasons(
    out: &mut Vec<u8>,
    rules: &LoadedRules,
    hits: &[u16],
    decision: &Decision,
    txn: &Txn<'_>,
) {
    out.push(b'[');
    for (k, &rule) in hits.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        let compiled = &rules.set.rules[usize::from(rule)];
        out.extend_from_slice(b"{\"rule\":");
        push_string(out, &compiled.id);
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(compiled.action.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":\"");
        let message = Explanation {
            set: &rules.set,
            rule,
            features: &decision.features,
            txn: Some(txn),
        };
        write!(StringContents(out), "{message}").expect("writing to a Vec cannot fail");
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
}

/// Writes the answer to a decided transaction.
pub(super) fn write_answer(
    out: &mut Vec<u8>,
    rules: &LoadedRules,
    txn: &Txn<'_>,
    decision: &Decision,
) {
    out.extend_from_slice(b"{\"transaction_id\":");
    push_string(out, &txn.transaction_id);
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(decision.action.as_str().as_bytes());
    out.extend_from_slice(b"\",\"reasons\":");
    push_reasons(out, rules, &decision.hits, decision, txn);
    out.extend_from_slice(b",\"shadow\":");
    push_reasons(out, rules, &decision.shadow, decision, txn);
    out.extend_from_slice(b",\"tags\":[");
    for (k, &rule) in decision.tags.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        push_string(out, &rules.set.rules[usize::from(rule)].id);
    }
    out.extend_from_slice(b"],\"score\":");
    match decision.features.score {
        Some(score) => push_integer(out, score),
        None => out.extend_from_slice(b"null"),
    }
    push_score_reasons(out, rules, decision);
    // The label is "{seq}-{hex}" (`RulesVersion`): nothing in it needs escaping.
    debug_assert!(needs_no_escape(&rules.version.label));
    out.extend_from_slice(b",\"rules_version\":\"");
    out.extend_from_slice(rules.version.label.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// Appends `,"score_reasons":[…]` when there are any to show (see [`shown_score_reasons`]).
fn push_score_reasons(out: &mut Vec<u8>, rules: &LoadedRules, decision: &Decision) {
    let reasons = shown_score_reasons(rules, decision);
    if reasons.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"score_reasons\":[");
    for (k, (characteristic, points, best_points)) in reasons.into_iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"characteristic\":");
        push_string(out, characteristic);
        out.extend_from_slice(b",\"points\":");
        push_integer(out, points);
        out.extend_from_slice(b",\"best_points\":");
        push_integer(out, best_points);
        out.push(b'}');
    }
    out.push(b']');
}

/// The score reasons an answer shows: (characteristic, points, best points) for up to three
/// characteristics that cost the most, when an enforced or shadow rule that reads the score
/// matched; none otherwise (and nothing is computed).
fn shown_score_reasons<'a>(
    rules: &'a LoadedRules,
    decision: &Decision,
) -> Vec<(&'a str, i64, i64)> {
    let set = &rules.set;
    let uses_score = decision
        .hits
        .iter()
        .chain(decision.shadow.iter())
        .any(|&i| set.rules[usize::from(i)].reads_score);
    match set.valid.scorecard.as_ref() {
        Some(card) if uses_score => engine::score_reasons(set, &decision.features, 3)
            .into_iter()
            .map(|(i, points, best)| (&*card.characteristics[i].name, points, best))
            .collect(),
        _ => Vec::new(),
    }
}

#[derive(Serialize)]
struct DuplicateReason<'a> {
    rule: &'static str,
    action: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct DuplicateAnswer<'a> {
    transaction_id: &'a str,
    decision: &'static str,
    reasons: [DuplicateReason<'a>; 1],
    shadow: [&'a str; 0],
    tags: [&'a str; 0],
    score: Option<i64>,
    rules_version: &'a str,
    duplicate: bool,
}

/// Writes the answer to a transaction decided before: its first decision, marked duplicate.
pub(super) fn write_duplicate(
    out: &mut Vec<u8>,
    rules: &LoadedRules,
    txn: &Txn<'_>,
    action: Action,
    first_at: EventTime,
) {
    let message = format!(
        "transaction_id already decided ({}) for the transaction at {}; the first decision is returned and nothing is recorded again",
        action.as_str(),
        txn::format_timestamp(first_at)
    );
    let answer = DuplicateAnswer {
        transaction_id: &txn.transaction_id,
        decision: action.as_str(),
        reasons: [DuplicateReason {
            rule: "duplicate_transaction",
            action: action.as_str(),
            message: &message,
        }],
        shadow: [],
        tags: [],
        score: None,
        rules_version: &rules.version.label,
        duplicate: true,
    };
    serde_json::to_writer(out, &answer).expect("writing JSON to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    //! The hand-written answer against the same answer serialised by serde_json.

    use std::borrow::Cow;

    use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

    use super::*;
    use crate::engine::Hits;
    use crate::interceptor::Interceptor;
    use crate::live_rules::LiveRules;
    use crate::state::{Store, StoreConfig};

    struct ReasonList<'a> {
        rules: &'a LoadedRules,
        hits: &'a Hits,
        decision: &'a Decision,
        txn: &'a Txn<'a>,
    }

    impl Serialize for ReasonList<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.hits.len()))?;
            for &rule in self.hits {
                let compiled = &self.rules.set.rules[usize::from(rule)];
                seq.serialize_element(&Reason {
                    rule: &compiled.id,
                    action: compiled.action.as_str(),
                    message: Explanation {
                        set: &self.rules.set,
                        rule,
                        features: &self.decision.features,
                        txn: Some(self.txn),
                    }
                    .to_string(),
                })?;
            }
            seq.end()
        }
    }

    #[derive(Serialize)]
    struct Reason<'a> {
        rule: &'a str,
        action: &'static str,
        message: String,
    }

    struct TagList<'a> {
        rules: &'a LoadedRules,
        hits: &'a Hits,
    }

    impl Serialize for TagList<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.hits.len()))?;
            for &i in self.hits {
                seq.serialize_element(&*self.rules.set.rules[usize::from(i)].id)?;
            }
            seq.end()
        }
    }

    #[derive(Serialize)]
    struct ScoreReason<'a> {
        characteristic: &'a str,
        points: i64,
        best_points: i64,
    }

    struct Answer<'a> {
        transaction_id: &'a str,
        decision: &'static str,
        reasons: ReasonList<'a>,
        shadow: ReasonList<'a>,
        tags: TagList<'a>,
        score: Option<i64>,
        score_reasons: Vec<ScoreReason<'a>>,
        rules_version: &'a str,
    }

    impl Serialize for Answer<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("Answer", 8)?;
            st.serialize_field("transaction_id", self.transaction_id)?;
            st.serialize_field("decision", self.decision)?;
            st.serialize_field("reasons", &self.reasons)?;
            st.serialize_field("shadow", &self.shadow)?;
            st.serialize_field("tags", &self.tags)?;
            st.serialize_field("score", &self.score)?;
            if !self.score_reasons.is_empty() {
                st.serialize_field("score_reasons", &self.score_reasons)?;
            }
            st.serialize_field("rules_version", self.rules_version)?;
            st.end()
        }
    }

    /// The answer as serde_json writes it.
    fn serde_answer(rules: &LoadedRules, txn: &Txn<'_>, decision: &Decision) -> Vec<u8> {
        let list = |hits| ReasonList {
            rules,
            hits,
            decision,
            txn,
        };
        let score_reasons = shown_score_reasons(rules, decision)
            .into_iter()
            .map(|(characteristic, points, best_points)| ScoreReason {
                characteristic,
                points,
                best_points,
            })
            .collect();
        serde_json::to_vec(&Answer {
            transaction_id: &txn.transaction_id,
            decision: decision.action.as_str(),
            reasons: list(&decision.hits),
            shadow: list(&decision.shadow),
            tags: TagList {
                rules,
                hits: &decision.tags,
            },
            score: decision.features.score,
            score_reasons,
            rules_version: &rules.version.label,
        })
        .unwrap()
    }

    /// Rules whose messages quote the transaction's own text (a channel with a quote, a
    /// backslash, a control character and non-ASCII), with a scorecard read by a rule.
    const RULES: &str = r#"
timezone: UTC
lists:
  odd_channels: ["we\"b", "a\\pp", "tab\there", "caf\u00e9"]
rules:
  - id: odd_channel
    action: review
    when:
      channel: { in: odd_channels }
  - id: big
    action: deny
    when:
      amount: { at_least: 1000 }
  - id: watch_big
    action: review
    mode: shadow
    when:
      amount: { at_least: 500 }
  - id: low_score
    action: review
    mode: shadow
    when:
      score: { less_than: 600 }
  - id: any_spend
    action: tag
    when:
      amount: { at_least: 1 }
scorecard:
  base_score: 600
  points_to_double_odds: 20
  characteristics:
    - name: "activity \"1d\""
      feature: { count: { window: 1d } }
      bins: [{ below: 3, points: -40 }, { from: 3, points: 10 }]
"#;

    #[test]
    fn the_written_answer_is_what_serde_json_writes() {
        let interceptor = Interceptor::new(
            Store::new(StoreConfig::default()),
            LiveRules::new(RULES.as_bytes(), "rules \"odd\".yaml").unwrap(),
        );
        let rules = interceptor.rules().load();
        let channels = ["we\"b", "a\\pp", "tab\there", "café", "app", "\u{1}"];
        let ids = ["t1", "t\"2", "t\\3", "t\n4", "tö5", "t6"];
        let amounts = ["12.00", "600", "1500.5", "3", "999.99", "1000"];
        for (k, ((channel, id), amount)) in channels.iter().zip(ids).zip(amounts).enumerate() {
            let body = format!(
                r#"{{"transaction_id":"x","customer_id":"c","timestamp":"2026-03-01T10:0{k}:00Z","amount":"{amount}"}}"#
            );
            let mut txn = crate::txn::parse_decide(body.as_bytes()).unwrap();
            txn.transaction_id = Cow::Borrowed(id);
            txn.channel = Some(Cow::Borrowed(channel));
            let mut decision = Decision::empty();
            let recorded = interceptor.evaluate_and_record(
                &rules.set,
                &txn,
                None,
                Default::default(),
                &mut decision,
            );
            assert!(recorded.is_ok(), "a new transaction is no duplicate");
            let mut written = Vec::new();
            write_answer(&mut written, &rules, &txn, &decision);
            let expected = serde_answer(&rules, &txn, &decision);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
