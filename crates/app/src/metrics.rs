//! The use cases' metrics: maps their results to the bounded labels of `telemetry::metrics`, so
//! each call site is one line. No label carries a person, a practice or an address (see
//! `telemetry::metrics`): which practice and who is in the audit entry written alongside.

use audit::SuspicionSubject;
use webhooks::{Provider, RejectReason, WebhookError};

/// The kind of a `security.suspicious_activity` subject, as a label.
pub(crate) fn suspicion_kind(subject: &SuspicionSubject) -> &'static str {
    match subject {
        SuspicionSubject::Account(_) => "account",
        SuspicionSubject::SourceIp(_) => "source_ip",
    }
}

/// A delivery that did not verify: `stale` when only its timestamp was out of tolerance,
/// `forged` for any other authentication failure (a wrong, missing or malformed signature),
/// `invalid` for an authentic-looking request Praxis cannot use (payload or configuration).
pub(crate) fn record_webhook_rejection(provider: Provider, rejection: &WebhookError) {
    let reason = rejection.reason();
    let outcome = if reason == RejectReason::TimestampOutOfTolerance {
        "stale"
    } else if reason.is_authentication_failure() {
        "forged"
    } else {
        "invalid"
    };
    telemetry::metrics::record_webhook_verification(provider.slug(), outcome);
}

/// A verified delivery: `duplicate` when every event in it was processed before, else
/// `verified` (a delivery that failed to process after verifying counts as `verified` too: the
/// provider retries it, and its failure is in the HTTP 5xx rate).
pub(crate) fn record_webhook_delivery(provider: Provider, duplicate: bool) {
    let outcome = if duplicate { "duplicate" } else { "verified" };
    telemetry::metrics::record_webhook_verification(provider.slug(), outcome);
}

/// One reminder round: its outcomes, and the practices that had reminders due (the backlog).
pub fn record_reminder_round(practices_due: usize, report: &crate::reminders::RoundReport) {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    telemetry::metrics::record_reminder_backlog(count(practices_due));
    for (outcome, n) in [
        ("sent", report.sent),
        ("skipped", report.skipped),
        ("retrying", report.retrying),
        ("failed", report.failed),
        ("error", report.errors),
        ("deferred", report.deferred),
    ] {
        if n > 0 {
            telemetry::metrics::record_reminders(outcome, count(n));
        }
    }
}
