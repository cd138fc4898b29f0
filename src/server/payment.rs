//! The payment listener: `POST /v1/decide`, `PUT /v1/customers/{id}/credit-line`,
//! `POST /v1/outcomes`. Admin paths do not exist here.

use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use percent_encoding::percent_decode_str;
use tracing::debug;

use super::AppState;
use super::http::{
    ApiError, HttpResponse, RequestContext, empty, ensure_client_present, json_bytes, read_limited,
};
use crate::txn;

/// Routes one request of the payment listener.
pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    context: Option<&RequestContext>,
) -> HttpResponse {
    match route(state, req, context).await {
        Ok(response) => response,
        Err(e) => {
            debug!(error = %e, "request refused");
            state.metrics.record_rejected(e.kind());
            e.response()
        }
    }
}

async fn route(
    state: &AppState,
    req: Request<Incoming>,
    context: Option<&RequestContext>,
) -> Result<HttpResponse, ApiError> {
    // The head is kept apart from the body, so the path is read where it lies.
    let (head, body) = req.into_parts();
    let (path, method) = (head.uri.path(), &head.method);
    let limit = state.config.max_body_bytes;
    let read = |body| read_limited(context, &head.headers, body, limit);
    let not_allowed = |allowed| ApiError::MethodNotAllowed {
        method: method.to_string(),
        allowed,
    };
    match path {
        "/v1/decide" => {
            if method != Method::POST {
                return Err(not_allowed("POST"));
            }
            let body = read(body).await?;
            ensure_client_present(context)?;
            let started = Instant::now();
            let mut out = Vec::with_capacity(512);
            let summary = state.interceptor.decide(&body, &mut out)?;
            let elapsed = started.elapsed();
            state
                .metrics
                .record_decision(&summary, elapsed.as_secs_f64());
            let answer = Bytes::from(out);
            if let Some(feed) = state.fleet.as_ref().and_then(|f| f.decisions.as_ref()) {
                feed.record(body.clone(), answer.clone(), elapsed);
            }
            if let Some(log) = &state.decision_log
                && log.record(body, answer.clone(), elapsed)
            {
                state.metrics.record_logged();
            }
            Ok(json_bytes(StatusCode::OK, answer))
        }
        "/v1/outcomes" => {
            if method != Method::POST {
                return Err(not_allowed("POST"));
            }
            let body = read(body).await?;
            let report = txn::parse_outcome(&body)?;
            ensure_client_present(context)?;
            state.interceptor.record_outcome(&report)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => {
            if let Some(encoded) = path
                .strip_prefix("/v1/customers/")
                .and_then(|rest| rest.strip_suffix("/credit-line"))
            {
                if method != Method::PUT {
                    return Err(not_allowed("PUT"));
                }
                // One path segment names one customer: `/v1/customers/../../x/credit-line`
                // must not set a line for a customer called `../../x`. An id holding `/` is
                // sent percent-encoded (`%2F`).
                if encoded.is_empty() || encoded.contains('/') || encoded == "." || encoded == ".."
                {
                    return Err(ApiError::BadRequest(txn::TxnError {
                        field: Some("customer_id"),
                        message: "customer_id: the path must name one customer as one segment, /v1/customers/{customer_id}/credit-line (percent-encode a '/' in an id as %2F)".into(),
                    }));
                }
                let customer_id = percent_decode_str(encoded).decode_utf8().map_err(|_| {
                    ApiError::BadRequest(txn::TxnError {
                        field: Some("customer_id"),
                        message: "customer_id: the path segment is not valid UTF-8".into(),
                    })
                })?;
                txn::validate_customer_id(&customer_id)?;
                let body = read(body).await?;
                let line = txn::parse_credit_line(&body)?;
                ensure_client_present(context)?;
                state.interceptor.set_credit_line(&customer_id, line);
                return Ok(empty(StatusCode::NO_CONTENT));
            }
            Err(ApiError::NotFound(path.to_owned()))
        }
    }
}
