// A failed unwrap in a test is a failed test with its message: exactly what a test should do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Logs personal data through the real subscriber set-up and checks none of it comes out.

use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;
    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter(self.0.clone())
    }
}

/// A struct a developer might log by mistake: plain `String`s, no `Pii` wrapper.
#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug only
struct CarelessSignup {
    phone: String,
    email: String,
    password: String,
    practice: String,
}

/// The same data held the way Praxis types hold it.
#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug only
struct CarefulSignup {
    contact: kernel::Pii<String>,
    credential: kernel::Secret<String>,
}

const PHONE: &str = "+4915112345678";
const EMAIL: &str = "erika.mustermann@example.org";
const PASSWORD: &str = "correct horse battery staple";

fn capture_logs(format: telemetry::LogFormat, log: impl FnOnce()) -> String {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(telemetry::fmt_layer(format, capture.clone()));
    tracing::subscriber::with_default(subscriber, log);
    capture.text()
}

fn assert_clean(output: &str) {
    assert!(!output.is_empty(), "nothing was logged");
    for value in [PHONE, EMAIL, PASSWORD] {
        assert!(!output.contains(value), "{value} leaked into logs:\n{output}");
    }
}

#[test]
fn json_logs_never_contain_phone_email_or_password() {
    let output = capture_logs(telemetry::LogFormat::Json, || {
        let careless = CarelessSignup {
            phone: PHONE.into(),
            email: EMAIL.into(),
            password: PASSWORD.into(),
            practice: "Praxis Mitte".into(),
        };
        tracing::info!(signup = ?careless, "debug-formatted struct");
        tracing::info!(phone = PHONE, email = EMAIL, password = PASSWORD, "as fields");
        tracing::info!(payload = %format!(r#"{{"user":{{"email":"{EMAIL}","phone":"{PHONE}"}}}}"#), "json in a field");
        let careful =
            CarefulSignup { contact: kernel::Pii::new(PHONE.into()), credential: kernel::Secret::new(PASSWORD.into()) };
        tracing::info!(signup = ?careful, "typed struct");
    });
    assert_clean(&output);
    assert!(output.contains("Praxis Mitte"), "non-sensitive fields must survive:\n{output}");
    for line in output.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every redacted line is still JSON");
    }
}

#[test]
fn pretty_logs_never_contain_phone_email_or_password() {
    let output = capture_logs(telemetry::LogFormat::Pretty, || {
        let careless = CarelessSignup {
            phone: PHONE.into(),
            email: EMAIL.into(),
            password: PASSWORD.into(),
            practice: "Praxis Mitte".into(),
        };
        tracing::warn!(?careless, phone = PHONE, "pretty output");
    });
    assert_clean(&output);
}
