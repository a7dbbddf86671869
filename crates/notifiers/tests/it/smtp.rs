//! The SMTP adapter against a small SMTP server (RFC 5321 replies, RFC 4954 AUTH PLAIN) on a
//! local port, without TLS (`security = "none"`, which the settings allow for loopback only).

use crate::{generated_secret, message};
use base64::Engine as _;
use kernel::Secret;
use notifiers::email::{SmtpNotifier, SmtpSecurity, SmtpSettings};
use notifiers::{Notifier, NotifyError, codes};
use scheduling::ReminderChannel;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server saw: the commands, and the message data.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<String>,
    data: String,
}

/// Accepts one session. `password` is the one AUTH PLAIN accepts; `refuse_rcpt` answers RCPT
/// with 550.
async fn sink(password: String, refuse_rcpt: bool) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let verb = line.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
            log.lock().unwrap().commands.push(if verb == "AUTH" { "AUTH PLAIN ...".into() } else { line.clone() });
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250 AUTH PLAIN\r\n",
                "AUTH" => {
                    let encoded = line.split_whitespace().nth(2).unwrap_or_default();
                    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default();
                    let expected = format!("\0reminders\0{password}");
                    if decoded == expected.as_bytes() {
                        b"235 2.7.0 Authentication successful\r\n"
                    } else {
                        b"535 5.7.8 Authentication credentials invalid\r\n"
                    }
                }
                "MAIL" => b"250 2.1.0 Ok\r\n",
                "RCPT" if refuse_rcpt => b"550 5.1.1 No such user\r\n",
                "RCPT" => b"250 2.1.5 Ok\r\n",
                "DATA" => {
                    write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.unwrap();
                    let mut data = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line == "." {
                            break;
                        }
                        data.push_str(&line);
                        data.push('\n');
                    }
                    log.lock().unwrap().data = data;
                    b"250 2.0.0 Ok: queued\r\n"
                }
                "RSET" | "NOOP" => b"250 2.0.0 Ok\r\n",
                "QUIT" => {
                    write.write_all(b"221 2.0.0 Bye\r\n").await.unwrap();
                    return;
                }
                _ => b"502 5.5.2 Command not recognized\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
    });
    (port, seen)
}

fn notifier(port: u16, password: &str) -> SmtpNotifier {
    SmtpNotifier::new(SmtpSettings {
        host: "127.0.0.1".into(),
        port: Some(port),
        security: SmtpSecurity::None,
        username: Some("reminders".into()),
        password: Some(Secret::new(password.to_owned())),
        from: "Praxis Reminders <reminders@praxis.test>".into(),
        subject: "Appointment reminder".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn an_email_reminder_is_submitted_with_a_stable_message_id_and_only_the_time() {
    let password = generated_secret();
    let (port, seen) = sink(password.clone(), false).await;
    notifier(port, &password).send(&message(ReminderChannel::Email, "patient@example.org")).await.unwrap();
    let seen = seen.lock().unwrap();
    let commands: Vec<&str> = seen.commands.iter().map(|c| c.split_whitespace().next().unwrap_or_default()).collect();
    assert_eq!(commands[1..], ["AUTH", "MAIL", "RCPT", "DATA", "QUIT"], "{:?}", seen.commands);
    assert!(seen.commands.contains(&"MAIL FROM:<reminders@praxis.test>".to_owned()), "{:?}", seen.commands);
    assert!(seen.commands.contains(&"RCPT TO:<patient@example.org>".to_owned()), "{:?}", seen.commands);
    let data = &seen.data;
    assert!(data.contains("Message-ID: <praxis-reminder-0190f0a4-1b2c-7d3e-8f40-000000000001@praxis.test>"), "{data}");
    assert!(data.contains("Subject: Appointment reminder"), "{data}");
    assert!(data.contains("To: patient@example.org"), "{data}");
    assert!(data.contains("2026-11-24 14:30 (Europe/Berlin)"), "{data}");
}

#[tokio::test]
async fn a_refused_login_is_temporary_and_a_refused_recipient_permanent() {
    let (port, _) = sink(generated_secret(), false).await;
    let result = notifier(port, "not-the-password").send(&message(ReminderChannel::Email, "patient@example.org")).await;
    assert_eq!(result, Err(NotifyError::Temporary { code: codes::PROVIDER_AUTH }));

    let password = generated_secret();
    let (port, _) = sink(password.clone(), true).await;
    let result = notifier(port, &password).send(&message(ReminderChannel::Email, "nobody@example.org")).await;
    assert_eq!(result, Err(NotifyError::Permanent { code: codes::INVALID_RECIPIENT }));
}

#[tokio::test]
async fn a_recipient_that_is_no_address_is_refused_before_connecting() {
    // No server: the address is refused before any connection.
    let result = notifier(9, &generated_secret()).send(&message(ReminderChannel::Email, "not an address")).await;
    assert_eq!(result, Err(NotifyError::Permanent { code: codes::INVALID_RECIPIENT }));
}
