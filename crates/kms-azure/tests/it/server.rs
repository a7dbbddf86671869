//! A tiny HTTP/1.1 server for the tests: one request per connection (`Connection: close`),
//! answered by a handler, every request recorded. Plus `Replay`, a handler that plays back the
//! recorded exchanges of a fixture file and checks that each request matches the recorded one.
//!
//! Fixture format (`tests/fixtures/*.json`):
//! `{"source": <API reference>, "exchanges": [{"request": {"method", "path", "headers", "json"},
//! "response": {"status", "headers", "json" | "text"}}]}`. In expected requests a string value
//! may be a placeholder: `{{base64}}`, `{{base64url}}`, `{{present}}` (any value) or
//! `{{absent}}` (a header that must not be sent). JSON and form bodies (`"form"`) must have
//! exactly the recorded fields.

use base64::Engine as _;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Wait this long before answering (to exercise timeouts).
    pub delay: Option<Duration>,
}

impl Response {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: None,
        }
    }
}

type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

pub struct Server {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, handler, log).await;
                });
            }
        });
        Self { url, requests, task }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, handler: Handler, log: Arc<Mutex<Vec<Request>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Request { method, path, headers, body };
    log.lock().unwrap().push(request.clone());
    let response = handler(&request);
    if let Some(delay) = response.delay {
        tokio::time::sleep(delay).await;
    }
    let mut out = format!(
        "HTTP/1.1 {} Fake\r\ncontent-length: {}\r\nconnection: close\r\n",
        response.status,
        response.body.len()
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

/// Plays back recorded exchanges in order, checking each request against the recorded one.
#[derive(Clone)]
pub struct Replay {
    pending: Arc<Mutex<VecDeque<Value>>>,
    mismatches: Arc<Mutex<Vec<String>>>,
    /// The server's own URL, put in place of `{{server}}` in recorded responses (a `kid` names
    /// the vault it came from).
    server_url: Arc<Mutex<String>>,
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

impl Replay {
    /// The exchanges of the named fixtures, one after the other.
    pub fn new(fixtures: &[&str]) -> Self {
        let mut pending = VecDeque::new();
        for name in fixtures {
            let fixture = fixture(name);
            assert!(fixture["source"].as_str().is_some_and(|s| s.starts_with("https://")), "{name}: no source");
            for exchange in fixture["exchanges"].as_array().unwrap() {
                pending.push_back(exchange.clone());
            }
        }
        Self { pending: Arc::new(Mutex::new(pending)), mismatches: Arc::default(), server_url: Arc::default() }
    }

    pub async fn serve(&self) -> Server {
        let replay = self.clone();
        let server = Server::start(move |request| replay.answer(request)).await;
        server.url.clone_into(&mut self.server_url.lock().unwrap());
        server
    }

    fn answer(&self, request: &Request) -> Response {
        let Some(exchange) = self.pending.lock().unwrap().pop_front() else {
            self.mismatches.lock().unwrap().push(format!("unexpected request {} {}", request.method, request.path));
            return Response::json(418, &serde_json::json!({"errors": ["no recorded exchange left"]}));
        };
        let problems = request_mismatches(&exchange["request"], request);
        if !problems.is_empty() {
            self.mismatches.lock().unwrap().push(format!(
                "{} {}: {}",
                request.method,
                request.path,
                problems.join("; ")
            ));
        }
        let mut response = recorded_response(&exchange["response"]);
        let url = self.server_url.lock().unwrap().clone();
        response.body = String::from_utf8(response.body).unwrap().replace("{{server}}", &url).into_bytes();
        response
    }

    /// Asserts that every recorded exchange was played and every request matched.
    pub fn finish(&self) {
        let mismatches = self.mismatches.lock().unwrap().clone();
        assert!(mismatches.is_empty(), "requests differ from the recording: {mismatches:#?}");
        let left = self.pending.lock().unwrap().len();
        assert_eq!(left, 0, "{left} recorded exchanges were not played");
    }
}

pub fn recorded_response(recorded: &Value) -> Response {
    let status = recorded["status"].as_u64().unwrap() as u16;
    let headers = recorded["headers"]
        .as_object()
        .map(|h| h.iter().map(|(n, v)| (n.clone(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default();
    let body = match (&recorded["json"], &recorded["text"]) {
        (Value::Null, Value::String(text)) => text.clone().into_bytes(),
        (Value::Null, _) => Vec::new(),
        (json, _) => json.to_string().into_bytes(),
    };
    Response { status, headers, body, delay: None }
}

/// What differs between a recorded request and an actual one (empty when they match).
pub fn request_mismatches(expected: &Value, actual: &Request) -> Vec<String> {
    let mut problems = Vec::new();
    if expected["method"].as_str() != Some(actual.method.as_str()) {
        problems.push(format!("method {} != {}", actual.method, expected["method"]));
    }
    if expected["path"].as_str() != Some(actual.path.as_str()) {
        problems.push(format!("path {} != {}", actual.path, expected["path"]));
    }
    if let Some(headers) = expected["headers"].as_object() {
        for (name, want) in headers {
            let want = want.as_str().unwrap();
            match (actual.header(name), want) {
                (None, "{{absent}}") => {}
                (Some(_), "{{absent}}") => problems.push(format!("header {name} must not be sent")),
                (None, _) => problems.push(format!("header {name} missing")),
                (Some(got), want) if !matches_value(want, got) => {
                    problems.push(format!("header {name} is {got:?}, recorded {want:?}"));
                }
                _ => {}
            }
        }
    }
    if let Some(want) = expected["form"].as_object() {
        let got = form_pairs(&actual.body);
        let mut got_keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        let mut want_keys: Vec<_> = want.keys().map(String::as_str).collect();
        got_keys.sort();
        want_keys.sort();
        if got_keys != want_keys {
            problems.push(format!("form fields {got_keys:?} != recorded {want_keys:?}"));
        }
        for (key, value) in &got {
            if let Some(w) = want.get(key).and_then(Value::as_str)
                && !matches_value(w, value)
            {
                problems.push(format!("form field {key} is {value:?}, recorded {w:?}"));
            }
        }
        if actual.header("content-type") != Some("application/x-www-form-urlencoded") {
            problems.push("form body without its content type".into());
        }
        return problems;
    }
    match &expected["json"] {
        Value::Null => {
            if !actual.body.is_empty() {
                problems.push("unexpected request body".into());
            }
        }
        Value::Object(want) => match actual.json() {
            Value::Object(got) => {
                let mut want_keys: Vec<_> = want.keys().collect();
                let mut got_keys: Vec<_> = got.keys().collect();
                want_keys.sort();
                got_keys.sort();
                if want_keys != got_keys {
                    problems.push(format!("body fields {got_keys:?} != recorded {want_keys:?}"));
                }
                for (key, want) in want {
                    match (want, got.get(key)) {
                        (Value::String(w), Some(Value::String(g))) if matches_value(w, g) => {}
                        (w, Some(g)) if w == g => {}
                        (w, g) => problems.push(format!("body field {key} is {g:?}, recorded {w}")),
                    }
                }
            }
            other => problems.push(format!("body is not a JSON object: {other}")),
        },
        other => problems.push(format!("bad fixture: json is {other}")),
    }
    problems
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn matches_value(want: &str, got: &str) -> bool {
    match want {
        "{{present}}" => true,
        "{{base64}}" => !got.is_empty() && base64::engine::general_purpose::STANDARD.decode(got).is_ok(),
        "{{base64url}}" => !got.is_empty() && base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(got).is_ok(),
        _ => want == got,
    }
}
