//! Connections: one per thread that sends commands, replaced after it stops answering.

use cache_redis::{CacheError, RedisStore};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one RESP command (an array of bulk strings); returns its name, upper-cased, or `None`
/// when the client is gone.
async fn read_command(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = complete_command(buffer) {
            let name = command_name(&buffer[..end]);
            buffer.drain(..end);
            return Some(name);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The first bulk string of a complete command.
fn command_name(command: &[u8]) -> String {
    let text = String::from_utf8_lossy(command);
    text.split("\r\n").nth(2).unwrap_or_default().to_ascii_uppercase()
}

/// The length of the first complete `*N\r\n($len\r\n<bytes>\r\n)*N` in `buffer`, if there is one.
fn complete_command(buffer: &[u8]) -> Option<usize> {
    fn line(buffer: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buffer.get(at..)?.windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buffer[at..end], end + 2))
    }
    let (header, mut at) = line(buffer, 0)?;
    let count: usize = std::str::from_utf8(header.strip_prefix(b"*")?).ok()?.parse().ok()?;
    for _ in 0..count {
        let (length, next) = line(buffer, at)?;
        let length: usize = std::str::from_utf8(length.strip_prefix(b"$")?).ok()?.parse().ok()?;
        at = next + length + 2;
        if buffer.len() < at {
            return None;
        }
    }
    Some(at)
}

/// A stand-in Redis that answers every command with `+PONG`, except that its first connection
/// stops answering after its first `PING` (a connection that hung while in use).
async fn hanging_then_healthy_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut stream, _)) = listener.accept().await {
            let hangs_after_a_ping = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut hung = false;
                while let Some(name) = read_command(&mut stream, &mut buffer).await {
                    if !hung && stream.write_all(b"+PONG\r\n").await.is_err() {
                        return;
                    }
                    hung |= hangs_after_a_ping && name == "PING";
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn a_connection_that_stops_answering_is_replaced_by_the_next_command() {
    let url = hanging_then_healthy_server().await;
    let store = RedisStore::new(&url, "p:", Duration::from_millis(300)).unwrap();
    store.ping().await.unwrap();
    // The connection stops answering: the command times out as unavailable...
    assert!(matches!(store.ping().await, Err(CacheError::Unavailable(_))));
    // ...and the next command does not queue behind it on the same connection: it connects anew.
    store.ping().await.unwrap();
    store.ping().await.unwrap();
}

/// Each HTTP worker is a single-threaded runtime, and a connection's I/O task runs on the
/// runtime that first used it. A worker whose runtime stops (a panic, a restart) takes only its
/// own connection with it: another thread's first command after that succeeds.
#[test]
fn a_stopped_runtime_takes_only_its_own_connection_down() {
    let redis = testkit::TestRedis::new();
    let store = crate::store(&redis);
    let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let worker = {
        let store = store.clone();
        std::thread::spawn(move || {
            // The runtime, and with it the I/O task of this thread's connection, ends with the thread.
            runtime().block_on(store.ping()).unwrap();
        })
    };
    worker.join().unwrap();
    runtime().block_on(async {
        store.ping().await.expect("this thread's first command has a live connection");
    });
}
