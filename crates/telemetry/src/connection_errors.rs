//! Connection-level errors of the HTTP server, logged at a level and a rate a client cannot abuse.
//!
//! actix-http answers a request it cannot parse (control bytes in a header value, too many
//! headers, a head over its buffer, both `Content-Length` and `Transfer-Encoding`) with a bare
//! 400 or 431 itself, before any application code runs, and then logs the connection's error at
//! ERROR (`stream error: ...`, target `actix_http::h1::dispatcher`). Any client can send such
//! requests, so left alone they would let anyone flood the error log and page an operator for
//! nothing the server did wrong.
//!
//! [`ConnectionErrorLayer`] takes those events instead: the output layers never see them
//! ([`is_connection_error`] is their per-layer filter), and this layer counts every one (the
//! `praxis.http.connection_errors` metric) and writes at most one WARN line per interval that says
//! how many there were and what the last one was. The framework's own message names only the
//! parse failure ("Parse error: invalid Header provided"), never the bytes sent.

use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Where the replacement lines are logged from (so a filter can raise or silence them).
pub const TARGET: &str = "praxis::http::connection_errors";

/// The HTTP server's connection-level error events: ERROR events of actix-http's HTTP/1
/// connection handling. The application's own errors never come from there.
pub fn is_connection_error(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::ERROR && metadata.target().starts_with("actix_http::h1::")
}

/// Counts the HTTP server's connection errors and logs a summary at WARN at most once per
/// `interval` (see the module documentation). Install it filtered to [`is_connection_error`].
#[derive(Debug)]
pub struct ConnectionErrorLayer {
    interval: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When the last summary line was written.
    last_line: Option<Instant>,
    /// Errors since then that no line mentioned yet.
    unreported: u64,
}

impl ConnectionErrorLayer {
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(Window::default()) }
    }

    /// Records one error at `now`; returns how many errors a line written now reports, or
    /// `None` when the interval since the last line has not passed.
    fn record(&self, now: Instant) -> Option<u64> {
        // A poisoned lock means a panic elsewhere while counting; the counts are still usable.
        let mut window = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        window.unreported += 1;
        let due = window.last_line.is_none_or(|last| now.duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        window.last_line = Some(now);
        Some(std::mem::take(&mut window.unreported))
    }
}

impl<S: Subscriber> Layer<S> for ConnectionErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        crate::metrics::record_http_connection_error();
        let Some(count) = self.record(Instant::now()) else { return };
        let mut message = MessageText::default();
        event.record(&mut message);
        tracing::warn!(
            target: TARGET,
            connection_errors = count,
            last_error = %message.0,
            interval_secs = self.interval.as_secs(),
            "the HTTP server refused malformed requests or lost connections (answered 400/431 by the framework, or \
             closed); at most one such line per interval, every one counted in praxis.http.connection_errors"
        );
    }
}

/// The `message` field of an event, at most [`MESSAGE_LIMIT`] characters.
#[derive(Default)]
struct MessageText(String);

/// At most this much of the framework's message is repeated.
const MESSAGE_LIMIT: usize = 200;

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}").chars().take(MESSAGE_LIMIT).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_logged_then_one_line_per_interval_counts_the_rest() {
        let layer = ConnectionErrorLayer::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(layer.record(start), Some(1));
        for second in 1..10 {
            assert_eq!(layer.record(start + Duration::from_secs(second)), None);
        }
        // The line after the interval reports its own error and the nine held back.
        assert_eq!(layer.record(start + Duration::from_secs(10)), Some(10));
        assert_eq!(layer.record(start + Duration::from_secs(11)), None);
    }

    #[test]
    fn only_the_http_servers_connection_errors_are_taken() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;

        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!("not registered")
            }
        }
        static SITE: Site = Site;
        let metadata = |target: &'static str, level: Level| {
            Metadata::new("e", target, level, None, None, None, FieldSet::new(&[], Identifier(&SITE)), Kind::EVENT)
        };
        assert!(is_connection_error(&metadata("actix_http::h1::dispatcher", Level::ERROR)));
        assert!(is_connection_error(&metadata("actix_http::h1::decoder", Level::ERROR)));
        assert!(!is_connection_error(&metadata("actix_http::h1::dispatcher", Level::TRACE)));
        assert!(!is_connection_error(&metadata("api::error", Level::ERROR)));
        assert!(!is_connection_error(&metadata("actix_http::h2::dispatcher", Level::WARN)));
    }
}
