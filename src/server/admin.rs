//! The admin listener: health, readiness, metrics, and rule operations. Kept apart from the
//! payment listener so that it can stay on loopback while payments are exposed. When an admin
//! token is configured, every call but `/healthz` and `/readyz` needs it as a bearer token.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::AppState;
use super::http::{ApiError, Body, HttpResponse, RequestContext, boxed, json, read_body, text};
use crate::live_rules::{HistoryEntry, LoadedRules};
use crate::reload::{ReloadOutcome, ReloadTrigger};
use crate::rules::{self, RulesError};

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetHealth<'a>>,
}

/// A fleet replica's replication progress, in `/readyz`.
#[derive(Serialize)]
struct FleetHealth<'a> {
    replica: &'a str,
    connected: bool,
    caught_up: bool,
    applied_sequence: u64,
    catch_up_to: u64,
    restoring_snapshot: bool,
}

#[derive(Serialize)]
struct RuleSummary<'a> {
    id: &'a str,
    action: &'static str,
    mode: &'static str,
    description: &'a str,
}

#[derive(Serialize)]
struct RulesBody<'a> {
    version: &'a str,
    seq: u64,
    sha256: &'a str,
    loaded_at: String,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// How long this set stays live: the rules file is the source of truth.
    lasts: &'static str,
    rules: Vec<RuleSummary<'a>>,
}

/// How long `loaded` stays live, given the rules file the server reloads from (if any).
fn lasts(loaded: &LoadedRules, rules_file: Option<&std::path::Path>) -> &'static str {
    match rules_file {
        Some(path) if loaded.source == path.display().to_string() => {
            "until the rules file changes or another set is pushed"
        }
        Some(_) => {
            "until the rules file is reloaded (it changes, or SIGHUP) or tripwire restarts; the file is the source of truth, so write this set to it to keep it"
        }
        None => "until another set is pushed or rolled back to",
    }
}

fn rules_body<'a>(
    loaded: &'a LoadedRules,
    changed: Option<bool>,
    rules_file: Option<&std::path::Path>,
) -> RulesBody<'a> {
    RulesBody {
        lasts: lasts(loaded, rules_file),
        version: &loaded.version.label,
        seq: loaded.version.seq,
        sha256: &loaded.version.sha256,
        loaded_at: loaded.loaded_at.to_string(),
        source: &loaded.source,
        changed,
        rules: loaded
            .set
            .rules()
            .iter()
            .map(|r| RuleSummary {
                id: &r.id,
                action: r.action.as_str(),
                mode: r.mode.as_str(),
                description: &r.description,
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct HistoryItem<'a> {
    at: String,
    outcome: &'static str,
    version: Option<&'a str>,
    sha256: &'a str,
    source: &'a str,
    error: Option<&'a str>,
    line: Option<u64>,
    column: Option<u64>,
}

fn history_item(entry: &HistoryEntry) -> HistoryItem<'_> {
    match &entry.outcome {
        Ok(version) => HistoryItem {
            at: entry.at.to_string(),
            outcome: "loaded",
            version: Some(&version.label),
            sha256: &entry.sha256,
            source: &entry.source,
            error: None,
            line: None,
            column: None,
        },
        Err(refusal) => HistoryItem {
            at: entry.at.to_string(),
            outcome: "refused",
            version: None,
            sha256: &entry.sha256,
            source: &entry.source,
            error: Some(&refusal.error),
            line: Some(refusal.line),
            column: Some(refusal.column),
        },
    }
}

/// Whether the request carries the configured bearer token (or none is configured).
fn authorized(state: &AppState, req: &Request<Incoming>) -> bool {
    let Some(expected) = &state.config.admin_token else {
        return true;
    };
    let offered = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    // Constant time in the token's content; only lengths can differ observably.
    offered.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 9110 section 11.1), so `bearer` and `BEARER` are accepted too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Routes one request of the admin listener.
pub async fn handle(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    context: Option<&RequestContext>,
) -> Response<Body> {
    if req.uri().path() == "/admin/customers" {
        if !authorized(state, &req) {
            return boxed(ApiError::Unauthorized.response());
        }
        if req.method() != Method::GET {
            return boxed(method_not_allowed(&req, "GET").response());
        }
        let query = req.uri().query().unwrap_or("").to_string();
        return match super::scan::scan(state, &query) {
            Ok(response) => response,
            Err(e) => boxed(e.response()),
        };
    }
    match route(state, req, context).await {
        Ok(response) => boxed(response),
        Err(e) => boxed(e.response()),
    }
}

fn method_not_allowed(req: &Request<Incoming>, allowed: &'static str) -> ApiError {
    ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allowed,
    }
}

async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    context: Option<&RequestContext>,
) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path().to_owned();
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path.as_str() {
        "/healthz" => {
            if !is_get {
                return Err(method_not_allowed(&req, "GET"));
            }
            return Ok(json(
                StatusCode::OK,
                &Health {
                    status: "ok",
                    rules_version: None,
                    fleet: None,
                },
            ));
        }
        "/readyz" => {
            if !is_get {
                return Err(method_not_allowed(&req, "GET"));
            }
            let rules = state.interceptor.rules().load();
            let accepting = state.accepting.load(Ordering::SeqCst);
            // A fleet replica is ready once it has applied what the stream held at its start;
            // a lost NATS connection later does not make it unready (replication fails open).
            let status = state.fleet.as_ref().map(|f| &f.status);
            let caught_up = status.is_none_or(|f| f.caught_up());
            let fleet = status.map(|f| FleetHealth {
                replica: &f.replica,
                connected: f.connected(),
                caught_up: f.caught_up(),
                applied_sequence: f.applied(),
                catch_up_to: f.target(),
                restoring_snapshot: f.restoring(),
            });
            return Ok(json(
                if accepting && caught_up {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &Health {
                    status: match (accepting, caught_up) {
                        (false, _) => "shutting down",
                        (true, false) => "catching up",
                        (true, true) => "ready",
                    },
                    rules_version: Some(&rules.version.label),
                    fleet,
                },
            ));
        }
        "/metrics"
        | "/admin/rules"
        | "/admin/rules/history"
        | "/admin/rules/rollback"
        | "/admin/fleet"
        | "/admin/fleet/snapshot"
        | "/admin/scorecard" => {}
        _ => return Err(ApiError::NotFound(path)),
    }
    if !authorized(state, &req) {
        return Err(ApiError::Unauthorized);
    }
    match (path.as_str(), req.method().clone()) {
        ("/metrics", m) if m == Method::GET || m == Method::HEAD => {
            let dropped = state.decision_log.as_ref().map_or(0, |l| l.dropped());
            state
                .metrics
                .refresh_drift(&state.interceptor.rules().load());
            Ok(text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.render(
                    state.interceptor.store(),
                    state.interceptor.journal().map(|j| j.as_ref()),
                    dropped,
                ),
            ))
        }
        ("/metrics", _) => Err(method_not_allowed(&req, "GET")),
        ("/admin/rules", m) if m == Method::GET || m == Method::HEAD => {
            let loaded = state.interceptor.rules().load_full();
            Ok(json(
                StatusCode::OK,
                &rules_body(&loaded, None, state.reloader.rules_path()),
            ))
        }
        ("/admin/rules", Method::PUT) => {
            let body = match read_body(context, req, rules::MAX_RULES_BYTES).await {
                Ok(body) => body,
                Err(e @ ApiError::PayloadTooLarge { .. }) => {
                    let error = RulesError::TooLarge {
                        bytes: rules::MAX_RULES_BYTES + 1,
                    };
                    state
                        .reloader
                        .refuse(ReloadTrigger::Api, "PUT /admin/rules", &[], &error);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let reloaded = state
                .reloader
                .reload(ReloadTrigger::Api, Some(body))
                .await?;
            let changed = matches!(reloaded, ReloadOutcome::Installed(_));
            Ok(json(
                StatusCode::OK,
                &rules_body(reloaded.live(), Some(changed), state.reloader.rules_path()),
            ))
        }
        ("/admin/rules", _) => Err(method_not_allowed(&req, "GET, PUT")),
        ("/admin/rules/history", m) if m == Method::GET || m == Method::HEAD => {
            let history = state.interceptor.rules().history();
            let items: Vec<HistoryItem<'_>> = history.iter().map(history_item).collect();
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "entries": items }),
            ))
        }
        ("/admin/rules/history", _) => Err(method_not_allowed(&req, "GET")),
        ("/admin/rules/rollback", Method::POST) => {
            let loaded = state.reloader.rollback().await?;
            Ok(json(
                StatusCode::OK,
                &rules_body(&loaded, Some(true), state.reloader.rules_path()),
            ))
        }
        ("/admin/rules/rollback", _) => Err(method_not_allowed(&req, "POST")),
        ("/admin/scorecard", m) if m == Method::GET || m == Method::HEAD => {
            let rules = state.interceptor.rules().load_full();
            let Some(card) = rules.set.valid.scorecard.as_ref() else {
                return Err(ApiError::NotFound(
                    "/admin/scorecard (the live rules have no scorecard)".into(),
                ));
            };
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "rules_version": rules.version.label,
                    "base_score": card.base_score,
                    "base_odds": card.base_odds,
                    "points_to_double_odds": card.points_to_double_odds,
                    "characteristics": card.characteristics.iter().map(|c| &c.name).collect::<Vec<_>>(),
                    "drift": state.metrics.drift.report(&rules),
                }),
            ))
        }
        ("/admin/scorecard", _) => Err(method_not_allowed(&req, "GET")),
        ("/admin/fleet", m) if m == Method::GET || m == Method::HEAD => {
            let fleet = state.fleet.as_ref().ok_or_else(not_in_fleet)?;
            let status = &fleet.status;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "replica": status.replica,
                    "connected": status.connected(),
                    "caught_up": status.caught_up(),
                    "restoring_snapshot": status.restoring(),
                    "applied_sequence": status.applied(),
                    "catch_up_to": status.target(),
                    "joined": status.joined(),
                    "snapshot": fleet.snapshots.latest().await,
                    "snapshot_written_here": status.snapshot_written(),
                }),
            ))
        }
        ("/admin/fleet", _) => Err(method_not_allowed(&req, "GET")),
        ("/admin/fleet/snapshot", Method::POST) => {
            let fleet = state.fleet.as_ref().ok_or_else(not_in_fleet)?;
            if !fleet.status.caught_up() {
                return Err(ApiError::Conflict(
                    "this replica has not caught up with the fleet yet; its state would be an older snapshot than the fleet's".into(),
                ));
            }
            let stored = fleet
                .snapshots
                .take(&fleet.status)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "stored": stored.is_some(),
                    "snapshot": match stored {
                        Some(info) => Some(info),
                        None => fleet.snapshots.latest().await,
                    },
                }),
            ))
        }
        ("/admin/fleet/snapshot", _) => Err(method_not_allowed(&req, "POST")),
        _ => Err(ApiError::NotFound(path)),
    }
}

fn not_in_fleet() -> ApiError {
    ApiError::NotFound("/admin/fleet (fleet mode is off: start with --nats)".into())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("BEARER  s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("Basic s3cret"), None);
        assert_eq!(bearer_token("Bearers3cret"), None);
    }
}
