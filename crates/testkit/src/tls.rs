//! Certificates for TLS tests (a Redis or a KMS endpoint over TLS), made fresh for each run.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let output =
        Command::new("openssl").args(args).current_dir(dir).output().expect(
            "the openssl command makes this run's CA and certificate (Debian/Ubuntu: apt-get install -y openssl)",
        );
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Writes into `dir` a CA (`ca.pem`, `ca.key`) and a server certificate it issued for `localhost`
/// (not for 127.0.0.1): `server.pem`, `server.key`. Made with the `openssl` command for each run,
/// so no key is ever committed.
pub fn make_certificates(dir: &Path) {
    make_certificates_for(dir, &["localhost"]);
}

/// [`make_certificates`] with a server certificate for each of `dns_names`.
pub fn make_certificates_for(dir: &Path, dns_names: &[&str]) {
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = [
        &["req", "-x509", "-days", "1", "-subj", "/CN=Praxis test CA", "-keyout", "ca.key", "-out", "ca.pem"][..],
        &key,
        &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
    ]
    .concat();
    openssl(dir, &ca);
    let request =
        [&["req", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"][..], &key].concat();
    openssl(dir, &request);
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            dns_names.iter().map(|name| format!("DNS:{name}")).collect::<Vec<_>>().join(",")
        ),
    )
    .expect("cannot write the server certificate's extensions file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}
