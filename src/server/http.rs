//! HTTP plumbing shared by the listeners: reading a bounded body, JSON answers, and the one
//! place where errors become status codes.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use crate::interceptor::OutcomeError;
use crate::live_rules::Refusal;
use crate::reload::ReloadError;
use crate::txn::TxnError;

/// The response type of the local handlers (answers built in memory).
pub type HttpResponse = Response<Full<Bytes>>;

/// The body type every listener answers with: local answers and streamed upstream answers.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// A local answer as a listener response.
pub fn boxed(response: HttpResponse) -> Response<Body> {
    response.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// What a handler knows of the request's connection, handed to it by the connection task.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The whole request (head and body) must have arrived by then.
    pub deadline: tokio::time::Instant,
    /// The request read timeout the deadline was set with.
    pub timeout: std::time::Duration,
    /// A second handle on the client's socket, to ask whether the client is still there.
    pub socket: Arc<socket2::Socket>,
}

impl RequestContext {
    fn timeout_seconds(&self) -> f64 {
        self.timeout.as_secs_f64()
    }

    /// Whether the client has closed or reset its connection. A request it gave up on must not
    /// change state: its decision would count in the customer's history although the payment
    /// never went ahead. Looks at the socket without consuming anything (`MSG_PEEK`); the
    /// socket is non-blocking, so this never waits.
    pub fn client_gone(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match self.socket.peek(&mut probe) {
            // End of stream: the client closed its side.
            Ok(0) => true,
            // Pipelined bytes of a next request: still there.
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// Refuses to change state for a request whose client is gone (see
/// [`RequestContext::client_gone`]).
pub fn ensure_client_present(context: Option<&RequestContext>) -> Result<(), ApiError> {
    match context {
        Some(c) if c.client_gone() => Err(ApiError::ClientGone),
        _ => Ok(()),
    }
}

/// Everything a request can fail with, mapped to an HTTP answer in [`ApiError::response`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid request.
    #[error("{0}")]
    BadRequest(#[from] TxnError),
    /// The body is larger than the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The body could not be read off the connection.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The request did not arrive whole within the request read timeout.
    #[error("the request did not arrive within {seconds} s; send the whole request at once")]
    RequestTimeout {
        /// The timeout, seconds.
        seconds: f64,
    },
    /// The client closed its connection before its request was acted on; nothing was recorded.
    #[error("the client closed the connection; the request was not acted on")]
    ClientGone,
    /// No such path.
    #[error("no such path: {0}")]
    NotFound(String),
    /// The path exists but not for this method.
    #[error("method {method} is not allowed here; allowed: {allowed}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the path takes.
        allowed: &'static str,
    },
    /// An outcome for a transaction not held.
    #[error("{0}")]
    UnknownTransaction(#[from] OutcomeError),
    /// A rule set was refused; the live one keeps serving.
    #[error("{}", .0.error)]
    RulesRefused(Refusal),
    /// An admin call without the right bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The request cannot be done in the current state.
    #[error("{0}")]
    Conflict(String),
    /// Something failed inside tripwire.
    #[error("internal error: {0}")]
    Internal(String),
    /// Tripwire cannot decide now and fails closed.
    #[error("{0}")]
    Unavailable(String),
    /// The upstream could not be reached or failed.
    #[error("{0}")]
    BadGateway(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> ApiError {
        match e {
            ReloadError::NoRulesFile | ReloadError::Rollback(_) | ReloadError::FleetManaged => {
                ApiError::Conflict(e.to_string())
            }
            ReloadError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            ReloadError::Refused(refusal) => ApiError::RulesRefused(refusal),
            ReloadError::Task(message) => ApiError::Internal(message),
        }
    }
}

#[derive(Serialize)]
struct RefusalBody<'a> {
    error: &'a str,
    line: u64,
    column: u64,
    problems: &'a [String],
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::RequestTimeout { .. } | ApiError::ClientGone => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) | ApiError::UnknownTransaction(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RulesRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "too_large",
            ApiError::BodyRead(_) => "body_read",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::ClientGone => "client_gone",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnknownTransaction(_) => "unknown_transaction",
            ApiError::RulesRefused(_) => "rules_refused",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::GatewayTimeout(_) => "gateway_timeout",
        }
    }

    /// The field at fault, when one is.
    fn field(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest(e) => e.field,
            ApiError::UnknownTransaction(OutcomeError::UnknownCustomer(_)) => Some("customer_id"),
            ApiError::UnknownTransaction(OutcomeError::UnknownTransaction { .. }) => {
                Some("transaction_id")
            }
            _ => None,
        }
    }

    /// The JSON answer `{"error": ..., "field": ...}` with the right status; a refused rule
    /// set answers `{"error", "line", "column", "problems"}`.
    pub fn response(&self) -> HttpResponse {
        if let ApiError::RulesRefused(refusal) = self {
            return json(
                self.status(),
                &RefusalBody {
                    error: &refusal.error,
                    line: refusal.line,
                    column: refusal.column,
                    problems: &refusal.problems,
                },
            );
        }
        let message = self.to_string();
        let body = ErrorBody {
            error: &message,
            field: self.field(),
        };
        let mut response = json(self.status(), &body);
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allowed));
        }
        if matches!(self, ApiError::RequestTimeout { .. } | ApiError::ClientGone) {
            // The rest of a late body may still be on its way: do not read it as a next request.
            response
                .headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::Unauthorized = self {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tripwire-admin\""),
            );
        }
        response
    }
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    let bytes = serde_json::to_vec(value).expect("serialising plain structs cannot fail");
    json_bytes(status, bytes)
}

/// A JSON answer from bytes already written.
pub fn json_bytes(status: StatusCode, bytes: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(bytes.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text answer.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty answer.
pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Reads the whole body, refusing it with 413 as soon as it is known to exceed `limit`.
pub async fn read_body(
    context: Option<&RequestContext>,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_limited(context, &parts.headers, body, limit).await
}

/// Reads a body whose headers are `headers`, refusing it with 413 past `limit`, and with 408
/// when it has not arrived by the request's deadline (`context`).
pub async fn read_limited(
    context: Option<&RequestContext>,
    headers: &hyper::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collect = Limited::new(body, limit).collect();
    let collected = match context {
        Some(context) => tokio::time::timeout_at(context.deadline, collect)
            .await
            .map_err(|_| ApiError::RequestTimeout {
                seconds: context.timeout_seconds(),
            })?,
        None => collect.await,
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// A server-side socket as the connection task holds it (non-blocking), and its client.
    fn pair() -> (TcpStream, RequestContext) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let context = RequestContext {
            deadline: tokio::time::Instant::now(),
            timeout: std::time::Duration::from_secs(1),
            socket: Arc::new(socket2::Socket::from(server)),
        };
        (client, context)
    }

    fn drain(context: &RequestContext) {
        let mut buf = [0u8; 64];
        let _ = (&*context.socket).read(&mut buf);
    }

    #[test]
    fn a_client_that_is_still_connected_is_present() {
        let (mut client, context) = pair();
        assert!(!context.client_gone());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !context.client_gone(),
            "unread bytes mean a client still there"
        );
        drain(&context);
        assert!(!context.client_gone());
    }

    #[test]
    fn a_client_that_closed_after_sending_is_gone() {
        let (mut client, context) = pair();
        client.write_all(b"{}").unwrap();
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(20));
        drain(&context);
        assert!(context.client_gone());
        assert!(ensure_client_present(Some(&context)).is_err());
        assert!(ensure_client_present(None).is_ok());
    }
}
