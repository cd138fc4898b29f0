//! The admin listener: health and readiness. Kept apart from the payment listener so that it
//! can stay on loopback while payments are exposed.

use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Serialize;

use super::AppState;
use super::http::{ApiError, HttpResponse, json};

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules_version: Option<&'a str>,
}

/// Routes one request of the admin listener.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path();
    let get_only = |allowed| {
        (req.method() != Method::GET && req.method() != Method::HEAD).then(|| {
            ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                allowed,
            }
            .response()
        })
    };
    match path {
        "/healthz" => get_only("GET").unwrap_or_else(|| {
            json(
                StatusCode::OK,
                &Health {
                    status: "ok",
                    rules_version: None,
                },
            )
        }),
        "/readyz" => get_only("GET").unwrap_or_else(|| {
            let rules = state.interceptor.rules().load();
            if state.accepting.load(Ordering::SeqCst) {
                json(
                    StatusCode::OK,
                    &Health {
                        status: "ready",
                        rules_version: Some(&rules.version.label),
                    },
                )
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &Health {
                        status: "shutting down",
                        rules_version: Some(&rules.version.label),
                    },
                )
            }
        }),
        other => ApiError::NotFound(other.to_string()).response(),
    }
}
