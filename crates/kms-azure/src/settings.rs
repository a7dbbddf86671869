//! The adapter's settings as the application's configuration spells them (`[kms.azure]`, or a
//! `[[kms.previous]]` entry with `backend = "azure"`), the one function that lists their
//! problems, and the adapter configuration they describe (with the Entra ID credential chain).

use crate::{ARC_KEY_DIR, AzureCredential, AzureKeyVaultConfig, IMDS_TOKEN_ENDPOINT, ManagedIdentitySource, is_name};
use crypto::{Kek, SettingProblem, SettingsPlace};
use kernel::Secret;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One RSA key of an Azure Key Vault (or Managed HSM), and how to get a token for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureSettings {
    /// The vault's URL, e.g. `https://praxis-kv.vault.azure.net`. Production requires
    /// `https://`.
    pub vault_url: String,
    /// The key's name (letters, digits, `-`).
    pub key_name: String,
    /// Wrap under this key version instead of the key's current one.
    pub key_version: Option<String>,
    /// How the adapter gets its Entra ID token (see [`AzureCredentialKind`]).
    pub credential: AzureCredentialKind,
    /// The Entra ID tenant (directory) id; default `AZURE_TENANT_ID` (set by AKS workload
    /// identity).
    pub tenant_id: Option<String>,
    /// The application (client) id; default `AZURE_CLIENT_ID`. With a managed identity: the
    /// user-assigned identity to use (unset: the system-assigned one).
    pub client_id: Option<String>,
    /// Secret of a service principal (`credential = "client_secret"`; e.g.
    /// `PRAXIS__KMS__AZURE__CLIENT_SECRET`).
    pub client_secret: Option<Secret<String>>,
    /// The federated token file of workload identity; default `AZURE_FEDERATED_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// The Entra ID authority; default `AZURE_AUTHORITY_HOST`, else the public cloud's.
    /// Production requires `https://`.
    pub authority_host: Option<String>,
    /// Where a managed identity's token comes from (see [`ManagedIdentitySourceKind`]).
    pub managed_identity_source: ManagedIdentitySourceKind,
    /// The token audience, e.g. `https://vault.azure.net`. Unset (recommended): learnt from the
    /// vault's 401 challenge, which must name a parent of the vault's host. Set it only for a
    /// vault reached under a name of your own (a private DNS alias).
    pub resource: Option<String>,
    /// A CA certificate file (PEM) trusted for the vault's endpoint in addition to the public
    /// roots: a private endpoint behind TLS inspection. Not used for Entra ID.
    pub ca_cert_file: Option<PathBuf>,
}

/// Where a managed identity's token comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedIdentitySourceKind {
    /// Detected from the environment as Azure's SDKs do: `IDENTITY_ENDPOINT` and
    /// `IDENTITY_HEADER` set: App Service (also Functions, Container Apps);
    /// `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` set: Azure Arc; otherwise the instance metadata
    /// service.
    #[default]
    Auto,
    /// The instance metadata service (VMs, VM scale sets, AKS nodes).
    Imds,
    /// App Service, Azure Functions, Container Apps (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
    AppService,
    /// An Azure Arc-enabled server (`IDENTITY_ENDPOINT`, the agent's key file).
    AzureArc,
}

/// How the adapter gets its token: a chain in `auto`, or one source named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AzureCredentialKind {
    /// The first that applies: a service principal when `client_secret` is set; workload
    /// identity when a federated token file is configured or `AZURE_FEDERATED_TOKEN_FILE` is
    /// set (AKS); otherwise the platform's managed identity.
    #[default]
    Auto,
    /// AKS workload identity: the federated token file exchanged for a token, no secret held.
    WorkloadIdentity,
    /// The platform's managed identity (VMs, App Service, Functions, Container Apps, Arc; see
    /// `managed_identity_source`).
    ManagedIdentity,
    /// A service principal's client secret.
    ClientSecret,
}

impl AzureSettings {
    /// Every problem of these settings at `place`, all at once (empty when there is none). The
    /// adapter checks the configuration it is built with by the same rules
    /// ([`AzureKeyVaultConfig::problems`]).
    pub fn problems(&self, place: &SettingsPlace<'_>) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.vault_url.trim().is_empty() {
            problems.push(place.missing("vault_url"));
        } else {
            problems.extend(place.check_url("vault_url", &self.vault_url));
        }
        if self.key_name.is_empty() {
            problems.push(place.missing("key_name"));
        } else if !is_name(&self.key_name, true) {
            problems.push(place.problem("key_name", "must be letters, digits and '-'"));
        }
        if let Some(version) = &self.key_version
            && !is_name(version, false)
        {
            problems.push(place.problem("key_version", "must be letters and digits"));
        }
        if self.key_id().len() > Kek::MAX_LABEL_LEN {
            // The key id is copied into every field ciphertext header with a one-byte length.
            problems.push(
                place.problem(
                    "key_name",
                    format!("vault_url/keys/key_name is longer than {} bytes", Kek::MAX_LABEL_LEN),
                ),
            );
        }
        if let Some(host) = &self.authority_host {
            problems.extend(place.check_url("authority_host", host));
        }
        for (setting, value) in [("tenant_id", &self.tenant_id), ("client_id", &self.client_id)] {
            if let Some(value) = value
                && !is_id(value)
            {
                problems.push(place.problem(setting, format!("{value:?} is not an id")));
            }
        }
        let has_secret = self.client_secret.as_ref().is_some_and(|s| !s.expose_secret().trim().is_empty());
        match self.credential {
            AzureCredentialKind::ClientSecret => {
                if !has_secret {
                    problems.push(place.problem(
                        "client_secret",
                        format!("required when {} = \"client_secret\"", place.path("credential")),
                    ));
                }
                if self.tenant_id.is_none() || self.client_id.is_none() {
                    problems
                        .push(place.problem("tenant_id", "tenant_id and client_id are required with a client secret"));
                }
            }
            AzureCredentialKind::WorkloadIdentity | AzureCredentialKind::ManagedIdentity if has_secret => {
                problems
                    .push(place.problem("client_secret", "is set but the credential is not client_secret; remove it"));
            }
            AzureCredentialKind::WorkloadIdentity
            | AzureCredentialKind::ManagedIdentity
            | AzureCredentialKind::Auto => {}
        }
        if let Some(file) = &self.token_file
            && file.as_os_str().is_empty()
        {
            problems.push(place.problem("token_file", "is empty"));
        }
        if self.managed_identity_source != ManagedIdentitySourceKind::Auto
            && matches!(self.credential, AzureCredentialKind::ClientSecret | AzureCredentialKind::WorkloadIdentity)
        {
            problems.push(place.problem(
                "managed_identity_source",
                format!("applies to a managed identity only; {} names another credential", place.path("credential")),
            ));
        }
        if self.managed_identity_source == ManagedIdentitySourceKind::AzureArc && self.client_id.is_some() {
            problems.push(
                place.problem(
                    "client_id",
                    "Azure Arc has only the machine's system-assigned identity; remove client_id",
                ),
            );
        }
        if let Some(resource) = &self.resource {
            problems.extend(resource_problem(place, resource));
        }
        if let Some(file) = &self.ca_cert_file {
            if file.as_os_str().is_empty() {
                problems.push(place.problem("ca_cert_file", "is empty"));
            } else {
                match std::fs::read_to_string(file) {
                    Ok(pem) => problems.extend(pem_problem(&pem).map(|why| place.problem("ca_cert_file", why))),
                    Err(e) => {
                        problems.push(place.problem("ca_cert_file", format!("cannot read {}: {e}", file.display())));
                    }
                }
            }
        }
        problems
    }

    /// The KEK id the adapter reports (`{vault_url}/keys/{key_name}`), by which a keyring routes
    /// unwraps.
    pub fn key_id(&self) -> String {
        format!("{}/keys/{}", self.vault_url.trim().trim_end_matches('/'), self.key_name)
    }

    /// The secret settings in use (path inside the section) and whether each is set.
    pub fn secret_settings(&self) -> Vec<(&'static str, bool)> {
        if self.client_secret.is_some() { vec![("client_secret", true)] } else { Vec::new() }
    }

    /// The adapter configuration these settings describe, with the default retry policy: the
    /// credential `credential` selects, unset ids, token file and authority filled from the
    /// `AZURE_*` variables that `env` reads (AKS workload identity sets them; a parameter so
    /// that the chain is testable), the managed identity's source from the variables the
    /// hosting platform sets, the CA file read. Errors name each missing setting and its
    /// variable, all at once.
    pub fn adapter_config(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<AzureKeyVaultConfig, String> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let from_env = |value: &Option<String>, name: &str| value.clone().or_else(|| env(name));
        let tenant_id = from_env(&self.tenant_id, "AZURE_TENANT_ID");
        let client_id = from_env(&self.client_id, "AZURE_CLIENT_ID");
        let token_file = self.token_file.clone().or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
        let authority_host = from_env(&self.authority_host, "AZURE_AUTHORITY_HOST");
        let kind = match self.credential {
            AzureCredentialKind::Auto if self.client_secret.is_some() => AzureCredentialKind::ClientSecret,
            AzureCredentialKind::Auto if token_file.is_some() => AzureCredentialKind::WorkloadIdentity,
            AzureCredentialKind::Auto => AzureCredentialKind::ManagedIdentity,
            explicit => explicit,
        };
        let mut errors = Vec::new();
        let mut required = |value: Option<String>, setting: &str, variable: &str| {
            if value.is_none() {
                errors.push(format!("{setting} is required for this credential ({setting} or {variable})"));
            }
            value.unwrap_or_default()
        };
        let credential = match kind {
            AzureCredentialKind::ClientSecret => AzureCredential::ClientSecret {
                tenant_id: required(tenant_id, "tenant_id", "AZURE_TENANT_ID"),
                client_id: required(client_id, "client_id", "AZURE_CLIENT_ID"),
                client_secret: self.client_secret.clone().unwrap_or_else(|| {
                    errors.push("client_secret is required for this credential".to_owned());
                    Secret::new(String::new())
                }),
            },
            AzureCredentialKind::WorkloadIdentity => {
                let tenant_id = required(tenant_id, "tenant_id", "AZURE_TENANT_ID");
                let client_id = required(client_id, "client_id", "AZURE_CLIENT_ID");
                if token_file.is_none() {
                    errors.push(
                        "token_file is required for workload identity (token_file or AZURE_FEDERATED_TOKEN_FILE)"
                            .to_owned(),
                    );
                }
                AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file: token_file.unwrap_or_default() }
            }
            AzureCredentialKind::ManagedIdentity | AzureCredentialKind::Auto => {
                let source = self.managed_identity_source(&env, &mut errors);
                if matches!(source, ManagedIdentitySource::AzureArc { .. }) && client_id.is_some() {
                    errors.push(
                        "Azure Arc has only the machine's system-assigned identity; unset client_id and AZURE_CLIENT_ID"
                            .to_owned(),
                    );
                }
                AzureCredential::ManagedIdentity { client_id, source }
            }
        };
        let mut config = AzureKeyVaultConfig::new(self.vault_url.clone(), self.key_name.clone(), credential);
        config.key_version.clone_from(&self.key_version);
        config.resource.clone_from(&self.resource);
        if let Some(host) = authority_host {
            config.authority_host = host;
        }
        if let Some(file) = &self.ca_cert_file {
            match std::fs::read_to_string(file) {
                Ok(pem) => config.ca_cert_pem = Some(pem),
                Err(e) => errors.push(format!("ca_cert_file: cannot read {}: {e}", file.display())),
            }
        }
        if errors.is_empty() { Ok(config) } else { Err(errors.join("; ")) }
    }

    /// The managed identity's source: the one configured, or the one the hosting platform's
    /// variables show (the SDKs' order: App Service, Azure Arc, the metadata service).
    fn managed_identity_source(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<String>,
    ) -> ManagedIdentitySource {
        let endpoint = env("IDENTITY_ENDPOINT");
        let header = env("IDENTITY_HEADER");
        let kind = match self.managed_identity_source {
            ManagedIdentitySourceKind::Auto if endpoint.is_some() && header.is_some() => {
                if env("IDENTITY_SERVER_THUMBPRINT").is_some() {
                    errors.push(
                        "IDENTITY_SERVER_THUMBPRINT is set: Service Fabric's managed identity is not supported \
                         (use a client secret or workload identity)"
                            .to_owned(),
                    );
                }
                ManagedIdentitySourceKind::AppService
            }
            ManagedIdentitySourceKind::Auto if endpoint.is_some() && env("IMDS_ENDPOINT").is_some() => {
                ManagedIdentitySourceKind::AzureArc
            }
            ManagedIdentitySourceKind::Auto => ManagedIdentitySourceKind::Imds,
            explicit => explicit,
        };
        let mut endpoint = |source: &str| match endpoint.clone() {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => url,
            Some(url) => {
                errors.push(format!("IDENTITY_ENDPOINT {url:?} is not an http(s) URL ({source})"));
                url
            }
            None => {
                errors.push(format!("IDENTITY_ENDPOINT is not set ({source})"));
                String::new()
            }
        };
        match kind {
            ManagedIdentitySourceKind::AppService => {
                let endpoint = endpoint("managed_identity_source = \"app_service\"");
                if header.is_none() {
                    errors.push("IDENTITY_HEADER is not set (managed_identity_source = \"app_service\")".to_owned());
                }
                ManagedIdentitySource::AppService { endpoint, header: Secret::new(header.unwrap_or_default()) }
            }
            ManagedIdentitySourceKind::AzureArc => {
                let endpoint = endpoint("managed_identity_source = \"azure_arc\"");
                let key_dir = if cfg!(windows) {
                    PathBuf::from(env("ProgramData").unwrap_or_else(|| "C:\\ProgramData".to_owned()))
                        .join("AzureConnectedMachineAgent")
                        .join("Tokens")
                } else {
                    PathBuf::from(ARC_KEY_DIR)
                };
                ManagedIdentitySource::AzureArc { endpoint, key_dir }
            }
            ManagedIdentitySourceKind::Imds | ManagedIdentitySourceKind::Auto => {
                ManagedIdentitySource::Imds { endpoint: IMDS_TOKEN_ENDPOINT.to_owned() }
            }
        }
    }
}

impl AzureKeyVaultConfig {
    /// Every problem with this configuration (empty when there is none): the rules of
    /// [`AzureSettings::problems`] for settings handed over directly, and the retry policy's.
    pub fn problems(&self) -> Vec<String> {
        let mut settings = AzureSettings {
            vault_url: self.vault_url.clone(),
            key_name: self.key_name.clone(),
            key_version: self.key_version.clone(),
            authority_host: Some(self.authority_host.clone()),
            resource: self.resource.clone(),
            ..AzureSettings::default()
        };
        let mut extra = Vec::new();
        match &self.credential {
            AzureCredential::ClientSecret { tenant_id, client_id, client_secret } => {
                settings.credential = AzureCredentialKind::ClientSecret;
                settings.tenant_id = Some(tenant_id.clone());
                settings.client_id = Some(client_id.clone());
                settings.client_secret = Some(client_secret.clone());
            }
            AzureCredential::WorkloadIdentity { tenant_id, client_id, token_file } => {
                settings.credential = AzureCredentialKind::WorkloadIdentity;
                settings.tenant_id = Some(tenant_id.clone());
                settings.client_id = Some(client_id.clone());
                settings.token_file = Some(token_file.clone());
            }
            AzureCredential::ManagedIdentity { client_id, source } => {
                settings.credential = AzureCredentialKind::ManagedIdentity;
                settings.client_id.clone_from(client_id);
                let endpoint = match source {
                    ManagedIdentitySource::Imds { endpoint } => {
                        settings.managed_identity_source = ManagedIdentitySourceKind::Imds;
                        endpoint
                    }
                    ManagedIdentitySource::AppService { endpoint, header } => {
                        settings.managed_identity_source = ManagedIdentitySourceKind::AppService;
                        if header.expose_secret().trim().is_empty() {
                            extra.push("managed identity: the App Service identity header is empty".to_owned());
                        }
                        endpoint
                    }
                    ManagedIdentitySource::AzureArc { endpoint, key_dir } => {
                        settings.managed_identity_source = ManagedIdentitySourceKind::AzureArc;
                        if !key_dir.is_absolute() {
                            extra.push("managed identity: the Azure Arc key directory must be absolute".to_owned());
                        }
                        endpoint
                    }
                };
                if reqwest::Url::parse(endpoint).map_or(true, |url| !matches!(url.scheme(), "http" | "https")) {
                    extra.push(format!("managed identity: endpoint {endpoint:?} is not an http(s) URL"));
                }
            }
        }
        let mut problems: Vec<String> =
            settings.problems(&SettingsPlace::direct()).iter().map(ToString::to_string).collect();
        problems.extend(extra);
        if let Some(pem) = &self.ca_cert_pem
            && let Some(why) = pem_problem(pem)
        {
            problems.push(format!("ca_cert_pem: {why}"));
        }
        problems.extend(self.retry.problems("retry"));
        problems
    }
}

/// What is wrong with a `resource` setting: it must be a service URL with no path.
fn resource_problem(place: &SettingsPlace<'_>, resource: &str) -> Option<SettingProblem> {
    if let Some(problem) = place.check_url("resource", resource) {
        return Some(problem);
    }
    let url = reqwest::Url::parse(resource.trim()).ok()?;
    (url.path() != "/")
        .then(|| place.problem("resource", "must be a service URL without a path, e.g. https://vault.azure.net"))
}

/// Why `pem` is not a CA bundle the client can use: not PEM, or no certificate in it.
fn pem_problem(pem: &str) -> Option<String> {
    let mut certificates = 0;
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        match certificate {
            Ok(_) => certificates += 1,
            Err(e) => return Some(format!("is not valid PEM: {e}")),
        }
    }
    (certificates == 0).then(|| "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned())
}

/// A tenant or client id: a GUID, or a tenant's domain name.
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 127 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::Environment;
    use std::collections::HashMap;

    fn messages(settings: &AzureSettings, environment: Environment) -> Vec<String> {
        let place = SettingsPlace::section("kms.azure", "kms.backend", "azure", environment);
        settings.problems(&place).iter().map(ToString::to_string).collect()
    }

    fn key() -> AzureSettings {
        AzureSettings {
            vault_url: "https://praxis-kv.vault.azure.net".into(),
            key_name: "praxis".into(),
            ..AzureSettings::default()
        }
    }

    #[test]
    fn settings_problems_name_each_setting() {
        // Managed identity (the chain's last resort) needs nothing more.
        assert_eq!(messages(&key(), Environment::Production), Vec::<String>::new());
        assert_eq!(
            messages(&AzureSettings::default(), Environment::Development),
            [
                "kms.azure.vault_url: required when kms.backend = \"azure\"",
                "kms.azure.key_name: required when kms.backend = \"azure\"",
            ]
        );
        let bad = AzureSettings {
            vault_url: "http://praxis-kv.vault.azure.net".into(),
            key_name: "a/b".into(),
            key_version: Some("not/a-version".into()),
            credential: AzureCredentialKind::ClientSecret,
            client_id: Some("a b".into()),
            authority_host: Some("http://login.example".into()),
            token_file: Some(PathBuf::new()),
            ..AzureSettings::default()
        };
        assert_eq!(
            messages(&bad, Environment::Production),
            [
                "kms.azure.vault_url: must be https:// in production",
                "kms.azure.key_name: must be letters, digits and '-'",
                "kms.azure.key_version: must be letters and digits",
                "kms.azure.authority_host: must be https:// in production",
                "kms.azure.client_id: \"a b\" is not an id",
                "kms.azure.client_secret: required when kms.azure.credential = \"client_secret\"",
                "kms.azure.tenant_id: tenant_id and client_id are required with a client secret",
                "kms.azure.token_file: is empty",
            ]
        );
        let stray_secret = AzureSettings {
            credential: AzureCredentialKind::ManagedIdentity,
            client_secret: Some(Secret::new("test-secret".into())),
            ..key()
        };
        assert_eq!(
            messages(&stray_secret, Environment::Development),
            ["kms.azure.client_secret: is set but the credential is not client_secret; remove it"]
        );
        assert_eq!(stray_secret.secret_settings(), [("client_secret", true)]);
        assert_eq!(key().secret_settings(), []);
    }

    fn resolve(settings: &AzureSettings, env: &[(&str, &str)]) -> Result<(AzureCredential, String), String> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        settings.adapter_config(&|name| env.get(name).cloned()).map(|config| (config.credential, config.authority_host))
    }

    #[test]
    fn the_credential_chain_picks_the_first_that_applies() {
        let ids = [("AZURE_TENANT_ID", "tenant-a"), ("AZURE_CLIENT_ID", "client-a")];
        // Nothing configured, no AKS environment: the managed identity.
        let (credential, authority) = resolve(&key(), &[]).unwrap();
        assert_eq!(
            credential,
            AzureCredential::ManagedIdentity {
                client_id: None,
                source: ManagedIdentitySource::Imds { endpoint: IMDS_TOKEN_ENDPOINT.into() }
            }
        );
        assert_eq!(authority, crate::DEFAULT_AUTHORITY_HOST);
        // AKS workload identity: everything from the environment the webhook sets.
        let aks = [
            ids[0],
            ids[1],
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_AUTHORITY_HOST", "https://login.example"),
        ];
        let (credential, authority) = resolve(&key(), &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::WorkloadIdentity {
                tenant_id: "tenant-a".into(),
                client_id: "client-a".into(),
                token_file: "/var/run/token".into()
            }
        );
        assert_eq!(authority, "https://login.example");
        // A configured client secret wins; configured ids win over the environment.
        let secret = Secret::new("test-secret".to_owned());
        let settings =
            AzureSettings { client_secret: Some(secret.clone()), client_id: Some("client-b".into()), ..key() };
        let (credential, _) = resolve(&settings, &aks).unwrap();
        assert_eq!(
            credential,
            AzureCredential::ClientSecret {
                tenant_id: "tenant-a".into(),
                client_id: "client-b".into(),
                client_secret: secret
            }
        );
        // Named explicitly but incomplete: the error names the setting and its variable.
        let settings = AzureSettings { credential: AzureCredentialKind::WorkloadIdentity, ..key() };
        let error = resolve(&settings, &[ids[1]]).unwrap_err();
        assert!(error.contains("tenant_id") && error.contains("AZURE_TENANT_ID"), "{error}");
        let error = resolve(&settings, &ids).unwrap_err();
        assert!(error.contains("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
    }

    fn source(settings: &AzureSettings, env: &[(&str, &str)]) -> Result<ManagedIdentitySource, String> {
        match resolve(settings, env)?.0 {
            AzureCredential::ManagedIdentity { source, .. } => Ok(source),
            other => panic!("not a managed identity: {other:?}"),
        }
    }

    #[test]
    fn the_managed_identity_source_comes_from_the_platforms_variables() {
        let app_service = [("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"), ("IDENTITY_HEADER", "h")];
        assert_eq!(
            source(&key(), &app_service).unwrap(),
            ManagedIdentitySource::AppService {
                endpoint: "http://localhost:42356/msi/token".into(),
                header: Secret::new("h".into())
            }
        );
        let arc = [
            ("IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token"),
            ("IMDS_ENDPOINT", "http://localhost:40342"),
        ];
        let ManagedIdentitySource::AzureArc { endpoint, key_dir } = source(&key(), &arc).unwrap() else {
            panic!("not Arc")
        };
        assert_eq!(endpoint, "http://localhost:40342/metadata/identity/oauth2/token");
        assert_eq!(key_dir, PathBuf::from(ARC_KEY_DIR));
        assert_eq!(source(&key(), &[]).unwrap(), ManagedIdentitySource::Imds { endpoint: IMDS_TOKEN_ENDPOINT.into() });
        // Named explicitly, the source is used whatever the environment says.
        let imds = AzureSettings { managed_identity_source: ManagedIdentitySourceKind::Imds, ..key() };
        assert!(matches!(source(&imds, &app_service), Ok(ManagedIdentitySource::Imds { .. })));
        // Service Fabric (App Service's variables and a thumbprint) is not mistaken for App Service.
        let fabric = [app_service[0], app_service[1], ("IDENTITY_SERVER_THUMBPRINT", "ab")];
        assert!(source(&key(), &fabric).unwrap_err().contains("Service Fabric"));
        // Every missing variable at once.
        let explicit = AzureSettings { managed_identity_source: ManagedIdentitySourceKind::AppService, ..key() };
        let error = source(&explicit, &[]).unwrap_err();
        assert!(
            error.contains("IDENTITY_ENDPOINT is not set") && error.contains("IDENTITY_HEADER is not set"),
            "{error}"
        );
        // Arc has no user-assigned identity.
        let error = resolve(&key(), &[arc[0], arc[1], ("AZURE_CLIENT_ID", "client-a")]).unwrap_err();
        assert!(error.contains("system-assigned"), "{error}");
        let arc_with_id = AzureSettings {
            managed_identity_source: ManagedIdentitySourceKind::AzureArc,
            client_id: Some("client-a".into()),
            credential: AzureCredentialKind::ClientSecret,
            ..key()
        };
        assert_eq!(
            messages(&arc_with_id, Environment::Development),
            [
                "kms.azure.client_secret: required when kms.azure.credential = \"client_secret\"",
                "kms.azure.tenant_id: tenant_id and client_id are required with a client secret",
                "kms.azure.managed_identity_source: applies to a managed identity only; kms.azure.credential names another credential",
                "kms.azure.client_id: Azure Arc has only the machine's system-assigned identity; remove client_id",
            ]
        );
    }

    #[test]
    fn the_resource_and_the_ca_file_are_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("kms-azure-settings-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        testkit::tls::make_certificates(&dir);
        let good = AzureSettings {
            resource: Some("https://managedhsm.azure.net".into()),
            ca_cert_file: Some(dir.join("ca.pem")),
            ..key()
        };
        assert_eq!(messages(&good, Environment::Production), Vec::<String>::new());
        let config = good.adapter_config(&|_| None).unwrap();
        assert_eq!(config.ca_cert_pem.as_deref(), Some(std::fs::read_to_string(dir.join("ca.pem")).unwrap().as_str()));
        assert_eq!(config.resource.as_deref(), Some("https://managedhsm.azure.net"));
        std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let bad = |resource: &str, file: PathBuf| AzureSettings {
            resource: Some(resource.into()),
            ca_cert_file: Some(file),
            ..key()
        };
        let missing = dir.join("missing.pem");
        let cases = [
            (bad("http://vault.azure.net", dir.join("ca.key")), "kms.azure.ca_cert_file: holds no PEM certificate"),
            (bad("https://vault.azure.net/keys", missing.clone()), "kms.azure.ca_cert_file: cannot read"),
            (bad("https://vault.azure.net", dir.join("garbage.pem")), "kms.azure.ca_cert_file: is not valid PEM"),
            (bad("https://vault.azure.net", PathBuf::new()), "kms.azure.ca_cert_file: is empty"),
        ];
        for (settings, want) in &cases {
            let found = messages(settings, Environment::Production);
            assert!(found.iter().any(|m| m.starts_with(want)), "{want}: {found:#?}");
        }
        assert_eq!(
            messages(&cases[0].0, Environment::Production)[0],
            "kms.azure.resource: must be https:// in production"
        );
        assert!(
            messages(&cases[1].0, Environment::Production)[0].starts_with("kms.azure.resource: must be a service URL")
        );
        let error = cases[1].0.adapter_config(&|_| None).unwrap_err();
        assert!(error.contains(&missing.display().to_string()), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
