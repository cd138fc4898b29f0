//! The API contract: `openapi.yaml` against the answers of a running server.
//!
//! Each case sends a real request over HTTP to the real server and checks the real answer
//! against the document: the status is documented for that path and method (or is one of the
//! answers any path can give: 404, 405, 431), the content type is a documented one, required
//! headers are present, and the body validates against the documented schema (JSON Schema
//! 2020-12, every `$ref` resolved across the whole document by `jsonschema`). Requests the
//! server accepted must be valid against the documented request schema, and requests it refused
//! naming a body field must be invalid against it. At the end, every documented path, method
//! and status must have been answered at least once.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::{Answer, send_with, start_with, txn};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, StatusCode};
use jsonschema::{Draft, Registry, Validator};
use serde_json::{Value, json};
use tripwire::server::ServeConfig;
use tripwire::state::StoreConfig;

/// The base URI the document is registered under; `$ref`s inside it resolve against it.
const BASE: &str = "https://tripwire.invalid/openapi.yaml";
const TOKEN: &str = "contract-token";
const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// Documented answers no request can provoke from outside: a reload task that panics.
const UNPROVOKABLE: [(&str, &str, &str); 2] = [
    ("/admin/rules", "PUT", "500"),
    ("/admin/rules/rollback", "POST", "500"),
];
/// Answers any path can give, documented once under `components/responses`.
const GENERAL: [&str; 4] = [
    "NotFound",
    "MethodNotAllowed",
    "HeadersTooLarge",
    "RequestTimeout",
];

/// Loaded with rules that exercise shadow hits, tag hits and a null score.
const OPS_RULES: &str = "timezone: UTC
rules:
  - id: big_amount
    description: Large drawdowns.
    action: deny
    when:
      amount: { at_least: 10000 }
  - id: watch_medium
    action: review
    mode: shadow
    when:
      amount: { at_least: 100 }
  - id: would_tag
    action: tag
    mode: shadow
    when:
      amount: { at_least: 100 }
  - id: anyone
    action: tag
    when:
      amount: { at_least: \"0.01\" }
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Payment,
    Admin,
}

fn load_document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml is at the repository root");
    serde_saphyr::from_str(&text).expect("openapi.yaml is valid YAML")
}

/// A JSON pointer token (RFC 6901).
fn token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment: characters a fragment cannot hold, percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The document, a validator for any location in it, and what the cases have answered.
struct Contract {
    doc: Value,
    registry: Registry<'static>,
    validators: HashMap<String, Validator>,
    /// (path template or `*`, METHOD or `*`, status or general response name).
    seen: BTreeSet<(String, String, String)>,
}

impl Contract {
    fn new() -> Contract {
        let doc = load_document();
        assert_eq!(doc["openapi"], "3.1.0", "an OpenAPI 3.1 document");
        let registry = Registry::new()
            .draft(Draft::Draft202012)
            .add(BASE, doc.clone())
            .expect("the base URI is valid")
            .prepare()
            .expect("the document registers as a JSON Schema 2020-12 resource");
        Contract {
            doc,
            registry,
            validators: HashMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// The value at `pointer`, following `$ref`s to other places in the document.
    fn at(&self, pointer: &str) -> &Value {
        let mut value = self
            .doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("openapi.yaml has nothing at {pointer}"));
        while let Some(target) = value.get("$ref").and_then(Value::as_str) {
            let fragment = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {target}"));
            value = self
                .doc
                .pointer(fragment)
                .unwrap_or_else(|| panic!("{target} (from {pointer}) resolves to nothing"));
        }
        value
    }

    /// `pointer` with a leading `$ref` followed, as a pointer.
    fn follow(&self, pointer: &str) -> String {
        match self.doc.pointer(pointer).and_then(|v| v["$ref"].as_str()) {
            Some(target) => self.follow(target.trim_start_matches('#')),
            None => pointer.to_string(),
        }
    }

    /// The problems of `instance` against the schema at `pointer`; empty when it is valid.
    fn problems(&mut self, pointer: &str, instance: &Value) -> Vec<String> {
        if !self.validators.contains_key(pointer) {
            let validator = jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(&self.registry)
                .should_validate_formats(true)
                .build(&json!({ "$ref": format!("{BASE}#{}", fragment(pointer)) }))
                .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"));
            self.validators.insert(pointer.to_string(), validator);
        }
        self.validators[pointer]
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn listener_of(&self, path_item: &Value) -> Listener {
        let url = path_item["servers"][0]["url"]
            .as_str()
            .expect("every path names its listener in `servers`");
        match url {
            u if u.ends_with(":8080") => Listener::Payment,
            u if u.ends_with(":9090") => Listener::Admin,
            other => panic!("a server that is neither listener: {other}"),
        }
    }

    /// The documented path template that serves `path` on `listener`.
    fn template(&self, listener: Listener, path: &str) -> Option<String> {
        let wanted: Vec<&str> = path.split('/').collect();
        self.doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .find(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                self.listener_of(item) == listener
                    && parts.len() == wanted.len()
                    && parts.iter().zip(&wanted).all(|(t, w)| {
                        (t.starts_with('{') && t.ends_with('}') && !w.is_empty()) || t == w
                    })
            })
            .map(|(template, _)| template.clone())
    }

    /// Checks one answer against the document; the mismatches, empty when it conforms.
    fn check(
        &mut self,
        listener: Listener,
        method: &Method,
        target: &str,
        request: &[u8],
        answer: &Answer,
    ) -> Vec<String> {
        let path = target.split('?').next().unwrap_or(target);
        let status = answer.status.as_str().to_string();
        let method_key = method.as_str().to_ascii_lowercase();
        let template = self.template(listener, path);
        let (response, operation) = if answer.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        {
            self.seen
                .insert(("*".into(), "*".into(), "HeadersTooLarge".into()));
            ("/components/responses/HeadersTooLarge".to_string(), None)
        } else if answer.status == StatusCode::REQUEST_TIMEOUT {
            self.seen
                .insert(("*".into(), "*".into(), "RequestTimeout".into()));
            ("/components/responses/RequestTimeout".to_string(), None)
        } else {
            match &template {
                None => {
                    if answer.status != StatusCode::NOT_FOUND {
                        return vec![format!(
                            "{path} is not documented on the {listener:?} listener, yet it answered {status}"
                        )];
                    }
                    self.seen
                        .insert(("*".into(), "*".into(), "NotFound".into()));
                    ("/components/responses/NotFound".to_string(), None)
                }
                Some(template) => {
                    let item = format!("/paths/{}", token(template));
                    if self.doc.pointer(&format!("{item}/{method_key}")).is_none() {
                        if answer.status != StatusCode::METHOD_NOT_ALLOWED {
                            return vec![format!(
                                "{method} {template} is not documented, yet it answered {status}"
                            )];
                        }
                        self.seen
                            .insert(("*".into(), "*".into(), "MethodNotAllowed".into()));
                        let mut problems = self.allow_matches(&item, &answer.headers);
                        problems.extend(
                            self.check_response("/components/responses/MethodNotAllowed", answer),
                        );
                        return problems;
                    }
                    let operation = format!("{item}/{method_key}");
                    let pointer = format!("{operation}/responses/{status}");
                    if self.doc.pointer(&pointer).is_none() {
                        return vec![format!(
                            "{method} {template} answered {status}, which is not documented for it"
                        )];
                    }
                    self.seen
                        .insert((template.clone(), method.to_string(), status.clone()));
                    (self.follow(&pointer), Some(operation))
                }
            }
        };
        let mut problems = self.check_response(&response, answer);
        if let Some(operation) = operation {
            problems.extend(self.check_request(&operation, request, answer));
        }
        problems
    }

    /// The `Allow` header of a 405 lists exactly the documented methods of the path.
    fn allow_matches(&self, item: &str, headers: &HeaderMap) -> Vec<String> {
        let documented: BTreeSet<String> = OPERATIONS
            .iter()
            .filter(|op| self.doc.pointer(&format!("{item}/{op}")).is_some())
            .map(|op| op.to_ascii_uppercase())
            .collect();
        let allowed: BTreeSet<String> = headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if allowed == documented {
            Vec::new()
        } else {
            vec![format!(
                "Allow lists {allowed:?}, the document {documented:?}"
            )]
        }
    }

    /// Headers, content type and body against the response object at `response`.
    fn check_response(&mut self, response: &str, answer: &Answer) -> Vec<String> {
        let mut problems = Vec::new();
        let headers: Vec<(String, bool)> = self
            .at(response)
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(name, spec)| (name.clone(), spec["required"] == true))
                    .collect()
            })
            .unwrap_or_default();
        for (name, required) in headers {
            match answer.headers.get(name.as_str()).map(HeaderValue::to_str) {
                Some(Ok(value)) => {
                    let pointer = format!("{response}/headers/{}/schema", token(&name));
                    for p in self.problems(&pointer, &Value::String(value.to_string())) {
                        problems.push(format!("header {name}: {p}"));
                    }
                }
                Some(Err(_)) => problems.push(format!("header {name} is not text")),
                None if required => problems.push(format!("the {name} header is missing")),
                None => {}
            }
        }
        let Some(content) = self.at(response).get("content").cloned() else {
            if !answer.body.is_empty() {
                problems.push(format!(
                    "documented without a body, yet it has one: {}",
                    answer.body
                ));
            }
            return problems;
        };
        let media = answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if content.get(&media).is_none() {
            let documented: Vec<&String> = content
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .collect();
            problems.push(format!(
                "content type {media:?} is not documented (documented: {documented:?})"
            ));
            return problems;
        }
        let schema = format!("{response}/content/{}/schema", token(&media));
        let instances: Vec<Result<Value, String>> = match media.as_str() {
            "application/json" => {
                vec![serde_json::from_str(&answer.body).map_err(|e| e.to_string())]
            }
            "application/x-ndjson" => {
                if !answer.body.is_empty() && !answer.body.ends_with('\n') {
                    problems.push("a JSON Lines body must end with a newline".into());
                }
                answer
                    .body
                    .lines()
                    .map(|line| serde_json::from_str(line).map_err(|e| e.to_string()))
                    .collect()
            }
            _ => vec![Ok(Value::String(answer.body.clone()))],
        };
        for instance in instances {
            match instance {
                Ok(value) => {
                    for p in self.problems(&schema, &value) {
                        problems.push(format!("body: {p} in {value}"));
                    }
                }
                Err(e) => problems.push(format!("body is not {media}: {e}: {}", answer.body)),
            }
        }
        problems
    }

    /// A request the server accepted must satisfy the documented request schema; one it
    /// refused naming a body field must not.
    fn check_request(&mut self, operation: &str, request: &[u8], answer: &Answer) -> Vec<String> {
        let pointer = format!("{operation}/requestBody/content/application~1json/schema");
        if self.doc.pointer(&pointer).is_none() {
            return Vec::new();
        }
        let Ok(body) = serde_json::from_slice::<Value>(request) else {
            return Vec::new();
        };
        let problems = self.problems(&pointer, &body);
        if answer.status.is_success() {
            return problems
                .into_iter()
                .map(|p| format!("an accepted request is invalid against the document: {p}"))
                .collect();
        }
        let field = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|b| b["field"].as_str().map(String::from));
        let documented_field = field
            .as_deref()
            .is_some_and(|f| self.at(&pointer)["properties"].get(f).is_some());
        if answer.status == StatusCode::BAD_REQUEST && documented_field && problems.is_empty() {
            return vec![format!(
                "the server refused {} for {field:?}, yet the document's request schema accepts it",
                String::from_utf8_lossy(request)
            )];
        }
        Vec::new()
    }

    /// Documented (path, METHOD, status) triples and general responses no case answered.
    fn unanswered(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (template, item) in self.doc["paths"].as_object().expect("paths") {
            for op in OPERATIONS {
                let Some(operation) = item.get(op) else {
                    continue;
                };
                let method = op.to_ascii_uppercase();
                for status in operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                {
                    let key = (template.clone(), method.clone(), status.clone());
                    let exempt = UNPROVOKABLE.contains(&(
                        template.as_str(),
                        method.as_str(),
                        status.as_str(),
                    ));
                    if !exempt && !self.seen.contains(&key) {
                        missing.push(format!("{method} {template} {status}"));
                    }
                }
            }
        }
        for name in GENERAL {
            if !self.seen.contains(&("*".into(), "*".into(), name.into())) {
                missing.push(format!("components/responses/{name}"));
            }
        }
        missing
    }
}

/// The running server, the contract, and the mismatches found so far.
struct Run {
    contract: Contract,
    payment: SocketAddr,
    admin: SocketAddr,
    failures: Vec<String>,
    cases: usize,
}

impl Run {
    /// Sends `request` ("METHOD /target") on a fresh connection, checks that it answers
    /// `expect` and that the answer agrees with the document.
    async fn case(
        &mut self,
        listener: Listener,
        expect: StatusCode,
        request: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let (method, target) = request.split_once(' ').expect("METHOD /target");
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let addr = match listener {
            Listener::Payment => self.payment,
            Listener::Admin => self.admin,
        };
        let answer = common::Client::connect(addr)
            .await
            .exchange(
                method.clone(),
                target,
                Bytes::from(body.to_string()),
                headers,
            )
            .await;
        self.cases += 1;
        let shown: String = body.chars().take(160).collect();
        if answer.status != expect {
            self.failures.push(format!(
                "{request} {shown} answered {} (wanted {expect}): {}",
                answer.status, answer.body
            ));
        }
        let problems = self
            .contract
            .check(listener, &method, target, body.as_bytes(), &answer);
        for problem in problems {
            self.failures
                .push(format!("{request} {shown} → {}: {problem}", answer.status));
        }
        answer
    }

    /// A payment-listener call; its body as JSON (null when it has none).
    async fn pay(&mut self, expect: StatusCode, request: &str, body: &str) -> Value {
        let answer = self
            .case(Listener::Payment, expect, request, body, &[])
            .await;
        json_of(&answer)
    }

    /// A request whose body never arrives whole: its head and one byte of a declared 100,
    /// over a raw socket, read until the server closes the connection.
    async fn stalled(&mut self, listener: Listener, request: &str) {
        let (method, target) = request.split_once(' ').expect("METHOD /target");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = match listener {
            Listener::Payment => self.payment,
            Listener::Admin => self.admin,
        };
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|code| StatusCode::from_bytes(code.as_bytes()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                )
            {
                headers.insert(name, value);
            }
        }
        let answer = Answer {
            status,
            headers,
            body: body.to_string(),
        };
        self.cases += 1;
        if status != StatusCode::REQUEST_TIMEOUT {
            self.failures
                .push(format!("a stalled {request} answered {status}: {text}"));
        }
        for problem in self.contract.check(
            listener,
            &Method::from_bytes(method.as_bytes()).expect("a method"),
            target,
            b"{",
            &answer,
        ) {
            self.failures
                .push(format!("stalled {request} → {status}: {problem}"));
        }
    }

    /// An admin call carrying the token.
    async fn adm(&mut self, expect: StatusCode, request: &str, body: &str) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str())];
        self.case(Listener::Admin, expect, request, body, &headers)
            .await
    }

    /// An admin call without the token, with `headers` only.
    async fn anon(
        &mut self,
        expect: StatusCode,
        request: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.case(Listener::Admin, expect, request, "", headers)
            .await
    }
}

fn json_of(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_answer_of_a_running_server_matches_openapi_yaml() {
    let config = ServeConfig {
        admin_token: Some(TOKEN.into()),
        request_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start_with(common::SHIPPED_RULES, StoreConfig::default(), config).await;
    let mut run = Run {
        contract: Contract::new(),
        payment: server.payment_addr(),
        admin: server.admin_addr(),
        failures: Vec::new(),
        cases: 0,
    };
    use StatusCode as S;
    const DECIDE: &str = "POST /v1/decide";
    const OUTCOME: &str = "POST /v1/outcomes";
    let pad = "x".repeat(70_000);

    // POST /v1/decide: allow, review, deny, a duplicate, every optional field, refusals.
    let first = txn("t-1", "alice", "2026-03-01T10:00:00+08:00", "120.50");
    let allow = run.pay(S::OK, DECIDE, &first).await;
    assert_eq!(allow["decision"], "allow", "{allow}");
    let night = txn("n-1", "nora", "2026-03-01T02:30:00+08:00", "80");
    let review = run.pay(S::OK, DECIDE, &night).await;
    assert_eq!(review["decision"], "review", "{review}");
    let line = r#"{"limit": "20000.00", "granted_at": "2026-03-01T10:00:00+08:00"}"#;
    run.pay(
        S::NO_CONTENT,
        "PUT /v1/customers/frank%2F01/credit-line",
        line,
    )
    .await;
    let drawdown = txn("f-1", "frank/01", "2026-03-01T10:12:00+08:00", "19000");
    let deny = run.pay(S::OK, DECIDE, &drawdown).await;
    assert_eq!(deny["decision"], "deny", "{deny}");
    let duplicate = run.pay(S::OK, DECIDE, &first).await;
    assert_eq!(duplicate["duplicate"], true, "{duplicate}");
    let every_field = json!({
        "transaction_id": "o-1", "customer_id": "olga", "timestamp": "2026-03-01T12:00:00Z",
        "amount": 99, "currency": "CNY", "lat": 31.23, "lon": 121.47,
        "credit_limit": "5000", "credit_granted_at": "2026-01-01T00:00:00Z",
        "channel": "app", "merchant_id": "m-1", "unknown_field": "ignored"
    });
    run.pay(S::OK, DECIDE, &every_field.to_string()).await;
    let precise = txn("x-1", "dave", "2026-03-01T10:00:00+08:00", "10.001");
    let refused = run.pay(S::BAD_REQUEST, DECIDE, &precise).await;
    assert_eq!(refused["field"], "amount", "{refused}");
    let lat_only = json!({"transaction_id": "x-2", "customer_id": "dave",
        "timestamp": "2026-03-01T10:00:00Z", "amount": "1", "lat": 12.5});
    let refused = run.pay(S::BAD_REQUEST, DECIDE, &lat_only.to_string()).await;
    assert_eq!(refused["field"], "lon", "{refused}");
    let refused = run.pay(S::BAD_REQUEST, DECIDE, "not json").await;
    assert!(refused.get("field").is_none(), "{refused}");
    let big = json!({"transaction_id": "big", "customer_id": "dave",
        "timestamp": "2026-03-01T10:00:00Z", "amount": "1", "pad": pad});
    run.pay(S::PAYLOAD_TOO_LARGE, DECIDE, &big.to_string())
        .await;

    // PUT /v1/customers/{customer_id}/credit-line: refusals (body and path), too large.
    let negative = r#"{"limit": "-1", "granted_at": "2026-03-01T10:00:00+08:00"}"#;
    let refused = run
        .pay(
            S::BAD_REQUEST,
            "PUT /v1/customers/frank/credit-line",
            negative,
        )
        .await;
    assert_eq!(refused["field"], "limit", "{refused}");
    let fine = r#"{"limit": 5000, "granted_at": "2026-02-01T00:00:00Z"}"#;
    let refused = run
        .pay(S::BAD_REQUEST, "PUT /v1/customers/%FF/credit-line", fine)
        .await;
    assert_eq!(refused["field"], "customer_id", "{refused}");
    let big = json!({"limit": "1", "granted_at": "2026-03-01T10:00:00Z", "pad": pad});
    run.pay(
        S::PAYLOAD_TOO_LARGE,
        "PUT /v1/customers/frank/credit-line",
        &big.to_string(),
    )
    .await;
    // A customer with a line and one quiet transaction, for the tag scan below.
    run.pay(S::NO_CONTENT, "PUT /v1/customers/ivy/credit-line", fine)
        .await;
    let quiet = txn("i-1", "ivy", "2026-03-01T11:00:00+08:00", "100");
    run.pay(S::OK, DECIDE, &quiet).await;

    // POST /v1/outcomes: recorded, unknown customer, unknown transaction, refusals.
    let settled = r#"{"transaction_id": "t-1", "customer_id": "alice", "status": "settled"}"#;
    run.pay(S::NO_CONTENT, OUTCOME, settled).await;
    let stranger = r#"{"transaction_id": "t-1", "customer_id": "nobody", "status": "failed"}"#;
    let missing = run.pay(S::NOT_FOUND, OUTCOME, stranger).await;
    assert_eq!(missing["field"], "customer_id", "{missing}");
    let unknown = r#"{"transaction_id": "nope", "customer_id": "alice", "status": "failed"}"#;
    let missing = run.pay(S::NOT_FOUND, OUTCOME, unknown).await;
    assert_eq!(missing["field"], "transaction_id", "{missing}");
    let lost = r#"{"transaction_id": "t-1", "customer_id": "alice", "status": "lost"}"#;
    let refused = run.pay(S::BAD_REQUEST, OUTCOME, lost).await;
    assert_eq!(refused["field"], "status", "{refused}");
    let big =
        json!({"transaction_id": "t-1", "customer_id": "alice", "status": "settled", "pad": pad});
    run.pay(S::PAYLOAD_TOO_LARGE, OUTCOME, &big.to_string())
        .await;

    // A body that never arrives whole: 408, on either listener.
    run.stalled(Listener::Payment, "POST /v1/decide").await;
    run.stalled(Listener::Admin, "PUT /admin/rules").await;

    // The payment listener's answers to any path: 404, 405, 431.
    for path in [
        "/v1/nope",
        "/",
        "/healthz",
        "/admin/rules",
        "/v1/customers/x/credit-line/x",
    ] {
        run.pay(S::NOT_FOUND, &format!("GET {path}"), "").await;
    }
    for request in [
        "GET /v1/decide",
        "DELETE /v1/decide",
        "POST /v1/customers/x/credit-line",
        "GET /v1/outcomes",
    ] {
        run.pay(S::METHOD_NOT_ALLOWED, request, "").await;
    }
    let huge = "h".repeat(20 * 1024);
    let too_much = [("x-pad", huge.as_str())];
    run.case(
        Listener::Payment,
        S::REQUEST_HEADER_FIELDS_TOO_LARGE,
        DECIDE,
        &first,
        &too_much,
    )
    .await;

    // Health, readiness and metrics.
    run.anon(S::OK, "GET /healthz", &[]).await;
    run.anon(S::OK, "GET /readyz", &[]).await;
    let metrics = run.adm(S::OK, "GET /metrics", "").await;
    assert!(
        metrics.body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    run.anon(S::UNAUTHORIZED, "GET /metrics", &[]).await;

    // Rules: read, load (changed and unchanged), refusals, history, rollback.
    let live = json_of(&run.adm(S::OK, "GET /admin/rules", "").await);
    assert_eq!(live["seq"], 1, "{live}");
    run.anon(S::UNAUTHORIZED, "GET /admin/rules", &[]).await;
    let wrong = [("authorization", "Bearer not-the-token")];
    run.anon(S::UNAUTHORIZED, "GET /admin/rules", &wrong).await;
    let loaded = json_of(&run.adm(S::OK, "PUT /admin/rules", OPS_RULES).await);
    assert_eq!(loaded["changed"], true, "{loaded}");
    let same = json_of(&run.adm(S::OK, "PUT /admin/rules", OPS_RULES).await);
    assert_eq!(same["changed"], false, "{same}");
    let syntax = "timezone: UTC\nrules: [oops\n";
    let refusal = json_of(
        &run.adm(S::UNPROCESSABLE_ENTITY, "PUT /admin/rules", syntax)
            .await,
    );
    assert!(refusal["line"].as_u64().is_some_and(|l| l > 0), "{refusal}");
    let invalid = "timezone: UTC\nrules:\n  - id: Bad-Id\n    action: block\n    when:\n      count: { window: 10x, at_least: 5 }\n";
    let refusal = json_of(
        &run.adm(S::UNPROCESSABLE_ENTITY, "PUT /admin/rules", invalid)
            .await,
    );
    assert!(
        refusal["problems"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{refusal}"
    );
    let huge_rules = format!(
        "{OPS_RULES}#{}\n",
        "x".repeat(tripwire::rules::MAX_RULES_BYTES)
    );
    run.adm(S::PAYLOAD_TOO_LARGE, "PUT /admin/rules", &huge_rules)
        .await;
    run.case(
        Listener::Admin,
        S::UNAUTHORIZED,
        "PUT /admin/rules",
        OPS_RULES,
        &[],
    )
    .await;
    // A decision under these rules: shadow hits (one of a tag rule), a tag, no score.
    let watched = txn("s-1", "sam", "2026-03-01T10:00:00Z", "500");
    let shadowed = run.pay(S::OK, DECIDE, &watched).await;
    assert_eq!(
        shadowed["shadow"].as_array().map(Vec::len),
        Some(2),
        "{shadowed}"
    );
    assert_eq!(shadowed["tags"], json!(["anyone"]), "{shadowed}");
    assert_eq!(shadowed["score"], Value::Null, "{shadowed}");
    let history = json_of(&run.adm(S::OK, "GET /admin/rules/history", "").await);
    let outcomes: BTreeSet<&str> = history["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, BTreeSet::from(["loaded", "refused"]), "{history}");
    run.anon(S::UNAUTHORIZED, "GET /admin/rules/history", &[])
        .await;
    let back = json_of(&run.adm(S::OK, "POST /admin/rules/rollback", "").await);
    assert_eq!(back["sha256"], live["sha256"], "{back}");
    run.adm(S::CONFLICT, "POST /admin/rules/rollback", "").await;
    run.anon(S::UNAUTHORIZED, "POST /admin/rules/rollback", &[])
        .await;

    // Customers a tag rule matches (the shipped rules are live again), and refusals.
    let scan = "GET /admin/customers?tag=silent_good_customer&at=2026-04-15T10:00:00%2B08:00";
    let found = run.adm(S::OK, scan, "").await;
    let lines: Vec<Value> = found
        .body
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["credit_limit"].is_string())
            && lines.iter().any(|l| l["credit_limit"].is_null()),
        "matches with and without a credit line: {}",
        found.body
    );
    for request in [
        "GET /admin/customers",
        "GET /admin/customers?tag=velocity_burst",
        "GET /admin/customers?tag=silent_good_customer&at=yesterday",
    ] {
        let refused = json_of(&run.adm(S::BAD_REQUEST, request, "").await);
        assert!(refused["field"].is_string(), "{request}: {refused}");
    }
    run.anon(
        S::UNAUTHORIZED,
        "GET /admin/customers?tag=silent_good_customer",
        &[],
    )
    .await;
    run.adm(
        S::METHOD_NOT_ALLOWED,
        "POST /admin/customers?tag=silent_good_customer",
        "",
    )
    .await;

    // The admin listener's answers to any path: 404, 405, 431.
    for path in ["/v1/decide", "/admin/nope", "/admin"] {
        run.adm(S::NOT_FOUND, &format!("GET {path}"), "").await;
    }
    run.anon(S::METHOD_NOT_ALLOWED, "POST /healthz", &[]).await;
    run.anon(S::METHOD_NOT_ALLOWED, "DELETE /readyz", &[]).await;
    for request in [
        "PUT /metrics",
        "DELETE /admin/rules",
        "POST /admin/rules/history",
        "GET /admin/rules/rollback",
    ] {
        run.adm(S::METHOD_NOT_ALLOWED, request, "").await;
    }
    run.anon(
        S::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "GET /healthz",
        &too_much,
    )
    .await;

    // HEAD, described once in the document: taken wherever GET is, but not by the scan.
    let auth = format!("Bearer {TOKEN}");
    let auth = [("authorization", auth.as_str())];
    for (path, expect) in [
        ("/healthz", S::OK),
        ("/admin/rules", S::OK),
        (
            "/admin/customers?tag=silent_good_customer",
            S::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (status, _) = send_with(run.admin, Method::HEAD, path, Bytes::new(), &auth).await;
        assert_eq!(status, expect, "HEAD {path}");
    }

    // Shutting down: readiness turns 503 first (what `Server::shutdown` does before it
    // stops accepting).
    server.state().accepting.store(false, Ordering::SeqCst);
    run.anon(S::SERVICE_UNAVAILABLE, "GET /readyz", &[]).await;

    let unanswered = run.contract.unanswered();
    assert!(
        run.failures.is_empty() && unanswered.is_empty(),
        "{} of {} answers disagree with openapi.yaml:\n  {}\ndocumented but never answered:\n  {}",
        run.failures.len(),
        run.cases,
        run.failures.join("\n  "),
        unanswered.join("\n  ")
    );
    for (path, method, status) in UNPROVOKABLE {
        let method = method.to_ascii_lowercase();
        let pointer = format!("/paths/{}/{method}/responses/{status}", token(path));
        assert!(
            run.contract.doc.pointer(&pointer).is_some(),
            "{pointer} is exempted but not documented"
        );
    }
    server.shutdown().await;
}

/// An answer made by hand, from a real one.
fn answer(status: StatusCode, content_type: Option<&str>, body: &str) -> Answer {
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn json_answer(status: StatusCode, value: &Value) -> Answer {
    answer(status, Some("application/json"), &value.to_string())
}

#[tokio::test]
async fn the_contract_refuses_answers_that_drift_from_the_document() {
    let server = common::start(common::SHIPPED_RULES).await;
    let mut contract = Contract::new();
    let decide = txn("t-1", "alice", "2026-03-01T10:00:00+08:00", "120.50");
    let genuine = common::Client::connect(server.payment_addr())
        .await
        .exchange(Method::POST, "/v1/decide", Bytes::from(decide.clone()), &[])
        .await;
    let post = Method::POST;
    let verdict = contract.check(
        Listener::Payment,
        &post,
        "/v1/decide",
        decide.as_bytes(),
        &genuine,
    );
    assert!(
        verdict.is_empty(),
        "the genuine answer conforms: {verdict:?}"
    );

    let real: Value = serde_json::from_str(&genuine.body).unwrap();
    let with = |key: &str, value: Value| {
        let mut v = real.clone();
        v[key] = value;
        json_answer(StatusCode::OK, &v)
    };
    let mut without_version = real.clone();
    without_version
        .as_object_mut()
        .unwrap()
        .remove("rules_version");
    let decide_drifts = [
        ("an extra field", with("risk", json!(0.2))),
        (
            "a missing field",
            json_answer(StatusCode::OK, &without_version),
        ),
        ("an unknown decision", with("decision", json!("maybe"))),
        ("a score as a string", with("score", json!("630"))),
        (
            "a duplicate flag on a fresh decision",
            with("duplicate", json!(true)),
        ),
        (
            "an undocumented status",
            json_answer(StatusCode::IM_A_TEAPOT, &real),
        ),
        (
            "another content type",
            answer(StatusCode::OK, Some("text/plain"), &genuine.body),
        ),
        (
            "an error with a code",
            json_answer(StatusCode::BAD_REQUEST, &json!({"error": "bad", "code": 7})),
        ),
        (
            "an error naming no field of the request",
            json_answer(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad", "field": "amount_minor"}),
            ),
        ),
        // The document accepts this request, so the server may not refuse it for `amount`.
        (
            "a refusal of a valid amount",
            json_answer(
                StatusCode::BAD_REQUEST,
                &json!({"error": "amount: no", "field": "amount"}),
            ),
        ),
    ];
    for (what, drifted) in &decide_drifts {
        let verdict = contract.check(
            Listener::Payment,
            &post,
            "/v1/decide",
            decide.as_bytes(),
            drifted,
        );
        assert!(!verdict.is_empty(), "{what} passed the contract");
    }

    let line = json!({"customer_id": "ivy", "tag": "silent_good_customer", "score": 640,
        "last_transaction_at": "2026-03-01T03:00:00Z", "credit_limit": 5000});
    let numeric_money = answer(
        StatusCode::OK,
        Some("application/x-ndjson"),
        &format!("{line}\n"),
    );
    let verdict = contract.check(
        Listener::Admin,
        &Method::GET,
        "/admin/customers?tag=x",
        b"",
        &numeric_money,
    );
    assert!(
        !verdict.is_empty(),
        "a credit limit as a JSON number passed"
    );
    let credit_line = br#"{"limit": "1", "granted_at": "2026-03-01T00:00:00Z"}"#;
    let with_body = answer(StatusCode::NO_CONTENT, None, "{}");
    let verdict = contract.check(
        Listener::Payment,
        &Method::PUT,
        "/v1/customers/a/credit-line",
        credit_line,
        &with_body,
    );
    assert!(!verdict.is_empty(), "a 204 with a body passed");
    let no_allow = json_answer(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "no"}));
    let verdict = contract.check(
        Listener::Payment,
        &Method::GET,
        "/v1/decide",
        b"",
        &no_allow,
    );
    assert!(!verdict.is_empty(), "a 405 without an Allow header passed");
    let no_challenge = json_answer(StatusCode::UNAUTHORIZED, &json!({"error": "no"}));
    let verdict = contract.check(
        Listener::Admin,
        &Method::GET,
        "/admin/rules",
        b"",
        &no_challenge,
    );
    assert!(!verdict.is_empty(), "a 401 without WWW-Authenticate passed");
    let elsewhere = json_answer(StatusCode::OK, &json!({"status": "ok"}));
    let verdict = contract.check(Listener::Payment, &Method::GET, "/healthz", b"", &elsewhere);
    assert!(
        !verdict.is_empty(),
        "an admin path answering on the payment listener passed"
    );
    server.shutdown().await;
}

#[test]
fn every_reference_in_openapi_yaml_resolves() {
    fn walk(doc: &Value, value: &Value, at: &str, broken: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                    let ok = target
                        .strip_prefix('#')
                        .is_some_and(|p| doc.pointer(p).is_some());
                    if !ok {
                        broken.push(format!("{at}: {target}"));
                    }
                }
                for (k, v) in map {
                    walk(doc, v, &format!("{at}/{}", token(k)), broken);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(doc, v, &format!("{at}/{i}"), broken);
                }
            }
            _ => {}
        }
    }
    let doc = load_document();
    let mut broken = Vec::new();
    walk(&doc, &doc, "", &mut broken);
    assert!(broken.is_empty(), "references to nothing: {broken:?}");
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in OPERATIONS {
            if let Some(id) = item.get(op).map(|o| {
                o["operationId"]
                    .as_str()
                    .expect("every operation has an operationId")
            }) {
                assert!(ids.insert(id), "operationId {id} is used twice");
            }
        }
    }
}
