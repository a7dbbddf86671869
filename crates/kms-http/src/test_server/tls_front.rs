//! A TLS front for a [`Server`](super::Server): a private endpoint behind TLS inspection, or a
//! TLS-inspecting proxy. It terminates TLS with a certificate the test's own CA issued and
//! passes each request, unchanged, to the plain-HTTP server behind it.
//!
//! Clients reach it directly (`https://localhost:{port}`, the certificate names `localhost`), or
//! through it as an HTTPS proxy (`HTTPS_PROXY=http://127.0.0.1:{port}`): it answers `CONNECT
//! host:443` with 200 and then serves TLS on the tunnel with the same certificate, so a client
//! can name a real Azure host (`praxis-hsm.managedhsm.azure.net`) whose requests all land here.
//! The certificate must name every host the client uses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Serves TLS with `cert_pem` / `key_pem` on 127.0.0.1 until the process ends, forwarding to
/// `backend` (`http://127.0.0.1:{port}`). Returns the port.
pub fn start(cert_pem: &Path, key_pem: &Path, backend: &str) -> u16 {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert_pem).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(key_pem).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let config = Arc::new(config);
    let backend = backend.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (config, backend) = (config.clone(), backend.clone());
            std::thread::spawn(move || {
                let _ = connection(stream, &config, &backend);
            });
        }
    });
    port
}

fn connection(mut stream: TcpStream, config: &Arc<rustls::ServerConfig>, backend: &str) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first)? == 1 && first[0] == b'C' {
        // An HTTPS proxy's tunnel: read the CONNECT request's head (byte by byte, so that no
        // byte of the TLS handshake after it is consumed), then agree.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut first)?;
            head.push(first[0]);
        }
        stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    }
    let connection = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(connection, stream);
    // One request per connection, as the server behind answers with `connection: close`.
    let mut reader = BufReader::new(&mut tls);
    let mut request = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        request.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    request.extend_from_slice(&body);
    let mut upstream = TcpStream::connect(backend)?;
    upstream.write_all(&request)?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    tls.write_all(&response)?;
    tls.conn.send_close_notify();
    tls.flush()
}
