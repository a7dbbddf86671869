//! The second net: masks values of sensitive keys in every formatted log line.

use regex::Regex;
use serde_json::Value;
use std::io::{self, Write};
use std::sync::LazyLock;
use tracing_subscriber::fmt::MakeWriter;

/// What a masked value becomes.
pub const REDACTED: &str = "[REDACTED]";

/// Key names (lower-cased, with `_` and `-` removed) whose values never reach a log.
const SENSITIVE_KEYS: &[&str] = &[
    "phone",
    "phonenumber",
    "email",
    "emailaddress",
    "content",
    "message",
    "body",
    "password",
    "passwd",
    "secret",
    "token",
    "accesstoken",
    "refreshtoken",
    "sessiontoken",
    "csrftoken",
    "apikey",
    "xapikey",
    "authorization",
    "cookie",
    "setcookie",
    "name",
    "firstname",
    "lastname",
    "dateofbirth",
    "address",
    "notes",
    "clinicalnotes",
];

/// Whether values under this key are masked. Matching ignores case, `_` and `-`, so `api_key`,
/// `apiKey`, `X-Api-Key` and `APIKEY` are all caught.
pub fn is_sensitive_key(key: &str) -> bool {
    let normalised: String = key.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect();
    SENSITIVE_KEYS.contains(&normalised.as_str())
}

/// `key: "value"`, `key = value`, `"key":"value"` inside free text (derived `Debug`, messages).
static KEY_VALUE_IN_TEXT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r#"(?P<key>"?[A-Za-z][A-Za-z0-9_-]*"?)(?P<sep>\s*[:=]\s*)(?P<value>"(?:[^"\\]|\\.)*"|[^\s,;}\)\]]+)"#)
        .ok()
});

/// Redacts one formatted log line. JSON lines are walked structurally; anything else is treated
/// as text. Never fails: a line it cannot understand is still scanned as text.
pub fn redact_line(line: &str) -> String {
    let trimmed = line.trim_end_matches('\n');
    let newline = if trimmed.len() == line.len() { "" } else { "\n" };
    if let Ok(mut value) = serde_json::from_str::<Value>(trimmed) {
        if let Value::Object(event) = &mut value {
            redact_log_event(event);
            return format!("{value}{newline}");
        }
        if value.is_array() {
            redact_value(&mut value);
            return format!("{value}{newline}");
        }
    }
    format!("{}{newline}", redact_text(trimmed))
}

/// A JSON log line from tracing: its own structural keys (`message` is the event's message,
/// `span.name` a span's name) are not data, so they are scanned as text rather than masked whole.
fn redact_log_event(event: &mut serde_json::Map<String, Value>) {
    for (key, inner) in event.iter_mut() {
        match (key.as_str(), inner) {
            ("message", Value::String(text)) => *text = redact_text(text),
            ("span", Value::Object(span)) => redact_span(span),
            ("spans", Value::Array(spans)) => spans.iter_mut().for_each(|span| {
                if let Value::Object(span) = span {
                    redact_span(span);
                }
            }),
            (_, inner) => redact_entry(key, inner),
        }
    }
}

fn redact_span(span: &mut serde_json::Map<String, Value>) {
    for (key, inner) in span.iter_mut() {
        if key != "name" {
            redact_entry(key, inner);
        }
    }
}

fn redact_entry(key: &str, inner: &mut Value) {
    if is_sensitive_key(key) && !inner.is_null() {
        *inner = Value::String(REDACTED.to_owned());
    } else {
        redact_value(inner);
    }
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                redact_entry(key, inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(text) => {
            // A string field may itself carry JSON (a logged payload) or Debug output.
            if let Ok(mut nested) = serde_json::from_str::<Value>(text)
                && (nested.is_object() || nested.is_array())
            {
                redact_value(&mut nested);
                *text = nested.to_string();
                return;
            }
            let redacted = redact_text(text);
            if redacted != *text {
                *text = redacted;
            }
        }
        _ => {}
    }
}

fn redact_text(text: &str) -> String {
    let Some(pattern) = KEY_VALUE_IN_TEXT.as_ref() else {
        return text.to_owned();
    };
    pattern
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let key = &caps["key"];
            if is_sensitive_key(key.trim_matches('"')) {
                format!("{key}{}\"{REDACTED}\"", &caps["sep"])
            } else {
                caps[0].to_owned()
            }
        })
        .into_owned()
}

/// Buffers one log event and writes it, redacted, when dropped (tracing's fmt layer asks for a
/// fresh writer per event, so one writer holds exactly one line).
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, buffer: Vec::with_capacity(512) }
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let redacted = text.split_inclusive('\n').map(redact_line).collect::<String>();
        self.buffer.clear();
        self.inner.write_all(redacted.as_bytes())?;
        self.inner.flush()
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // The event is written whole on drop; flushing early could split a line.
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // A log write that fails has nowhere to be reported; dropping the line is the only option.
        let _ = self.flush_buffer();
    }
}

/// `MakeWriter` that wraps every writer of `M` in a [`RedactingWriter`].
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.inner.make_writer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_keys_match_any_spelling() {
        for key in ["phone", "Phone", "api_key", "apiKey", "X-Api-Key", "AUTHORIZATION", "set-cookie", "date_of_birth"]
        {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in ["tenant_id", "status", "request_id", "level"] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn json_fields_and_nested_json_are_masked() {
        let line = r#"{"level":"INFO","phone":"+4915112345678","fields":{"payload":"{\"email\":\"a@b.de\",\"ok\":1}"},"status":200}"#;
        let out = redact_line(line);
        assert!(!out.contains("+4915112345678"), "{out}");
        assert!(!out.contains("a@b.de"), "{out}");
        assert!(out.contains("\"status\":200"), "{out}");
        assert!(out.contains("\\\"ok\\\":1"), "{out}");
    }

    #[test]
    fn log_structure_survives() {
        let line = r#"{"message":"patient created","span":{"name":"request","email":"a@b.de"},"name":"Erika"}"#;
        let out = redact_line(line);
        assert!(out.contains("patient created"), "{out}");
        assert!(out.contains("\"name\":\"request\""), "{out}");
        assert!(!out.contains("a@b.de") && !out.contains("Erika"), "{out}");
    }

    #[test]
    fn debug_text_is_masked() {
        let out = redact_line(
            r#"patient: Patient { phone: "+49 151 1234", email: "x@y.z", password: "pw, with comma", id: 7 }"#,
        );
        assert!(!out.contains("+49 151 1234"), "{out}");
        assert!(!out.contains("x@y.z"), "{out}");
        assert!(!out.contains("pw, with comma"), "{out}");
        assert!(out.contains("id: 7"), "{out}");
    }

    #[test]
    fn key_equals_value_is_masked() {
        let out = redact_line("login failed token=abc.def.ghi user=42");
        assert!(!out.contains("abc.def.ghi"), "{out}");
        assert!(out.contains("user=42"), "{out}");
    }
}
