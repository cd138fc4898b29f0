//! `GET /admin/customers?tag=RULE[&at=TIME]`: finds the customers a tag rule matches now,
//! including those who no longer transact (and so never pass the payment path).
//!
//! A blocking task walks the store one shard at a time: it copies the shard's customers out
//! under the shard lock (a memcpy), releases it, and only then evaluates — decisions on that
//! shard wait for a copy, never for the evaluation. Matches are streamed back as JSON lines.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use tokio::sync::mpsc;

use super::AppState;
use super::http::{ApiError, Body};
use crate::engine;
use crate::rules::Action;
use crate::txn::{self, Amount};

/// A body fed by a channel of ready chunks.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[derive(Serialize)]
struct Line<'a> {
    customer_id: &'a str,
    tag: &'a str,
    score: Option<i64>,
    last_transaction_at: Option<String>,
    credit_limit: Option<String>,
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn bad(field: &'static str, message: String) -> ApiError {
    ApiError::BadRequest(txn::TxnError {
        field: Some(field),
        message: format!("{field}: {message}"),
    })
}

/// Starts a scan and answers with its stream of matches.
pub fn scan(state: &Arc<AppState>, query: &str) -> Result<Response<Body>, ApiError> {
    let tag = query_param(query, "tag")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            bad(
                "tag",
                "is required, such as ?tag=silent_good_customer".into(),
            )
        })?;
    let rules = state.interceptor.rules().load_full();
    let index = rules
        .set
        .rules()
        .iter()
        .position(|r| *r.id == *tag && r.action == Action::Tag)
        .ok_or_else(|| {
            let known: Vec<&str> = rules
                .set
                .rules()
                .iter()
                .filter(|r| r.action == Action::Tag)
                .map(|r| &*r.id)
                .collect();
            bad(
                "tag",
                format!(
                    "no tag rule {tag:?} in the live rules; tag rules: {}",
                    known.join(", ")
                ),
            )
        })?;
    let (at, at_source) = match query_param(query, "at") {
        Some(text) => (
            txn::parse_timestamp(&text).map_err(|e| bad("at", e))?,
            "query",
        ),
        // Event time, not the wall clock: the latest transaction time seen.
        None => match state.interceptor.store().watermark() {
            Some(at) => (at, "latest-event"),
            None => (jiff::Timestamp::now().as_microsecond(), "wall-clock"),
        },
    };
    let held = state.interceptor.store().customers();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || {
        let store = state.interceptor.store();
        let mut line = Vec::with_capacity(256);
        for shard in 0..store.shard_count() {
            for customer in store.copy_shard(shard) {
                let decision = engine::evaluate_at(&rules.set, &customer.history(), at);
                if !decision.tags.contains(&(index as u16)) {
                    continue;
                }
                line.clear();
                let last = customer
                    .events
                    .iter()
                    .map(|e| e.at)
                    .filter(|&t| t <= at)
                    .max();
                let entry = Line {
                    customer_id: &customer.key,
                    tag: &tag,
                    score: decision.features.score,
                    last_transaction_at: last.map(txn::format_timestamp),
                    credit_limit: customer.credit_line.map(|l| Amount::to_string(&l.limit)),
                };
                serde_json::to_writer(&mut line, &entry).expect("writing to a Vec cannot fail");
                line.push(b'\n');
                if tx.blocking_send(Bytes::copy_from_slice(&line)).is_err() {
                    // The client went away: stop scanning.
                    return;
                }
            }
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed_unsync());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    // An empty answer needs its context: when the scan looked, and over how many customers.
    if let Ok(v) = HeaderValue::from_str(&txn::format_timestamp(at)) {
        headers.insert("x-scan-at", v);
    }
    headers.insert("x-scan-at-source", HeaderValue::from_static(at_source));
    headers.insert("x-scan-customers", HeaderValue::from(held as u64));
    Ok(response)
}
