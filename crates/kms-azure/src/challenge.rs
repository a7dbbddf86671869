//! Key Vault's challenge-based authentication: which resource (token audience) a vault expects.
//!
//! A Key Vault or Managed HSM answers a request without a token with `401` and
//! `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//! resource="https://vault.azure.net"` (newer services send `scope=".../.default"` instead of
//! `resource=`). The resource differs per service and cloud: `https://managedhsm.azure.net` for
//! a Managed HSM, `https://vault.azure.cn` in Azure China, `https://vault.usgovcloudapi.net` in
//! Azure Government, and so on. Reading it from the vault, as Azure's SDKs do, means no table
//! of clouds to keep up to date.
//!
//! A challenge is only believed when the vault's host lies under the resource's host (the
//! host ends with `.` + the resource's host), the SDKs' rule: otherwise a mistyped or hostile
//! `vault_url` could answer with `resource="https://management.azure.com"` and receive a token
//! that manages the subscription.

/// The resource a `WWW-Authenticate` value names, from its `Bearer` challenge: `resource`, or
/// `scope` without its `/.default` suffix. `None` when there is no Bearer challenge or it
/// names neither.
pub(crate) fn challenge_resource(header: &str) -> Option<String> {
    let params = bearer_params(header)?;
    let find = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let resource = match (find("resource"), find("scope")) {
        (Some(resource), _) => resource,
        (None, Some(scope)) => scope.strip_suffix("/.default").unwrap_or(scope),
        (None, None) => return None,
    };
    let resource = resource.trim().trim_end_matches('/');
    (!resource.is_empty()).then(|| resource.to_owned())
}

/// The `name="value"` (or `name=token`) parameters of the Bearer challenge in `header`.
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let header = header.trim_start();
    let scheme_end = header.find(char::is_whitespace).unwrap_or(header.len());
    if !header[..scheme_end].eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut rest = header[scheme_end..].trim_start();
    let mut params = Vec::new();
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim();
        if name.contains(char::is_whitespace) {
            // The next challenge's scheme ("..., PoP nonce=..."): this one has ended.
            break;
        }
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let close = quoted.find('"')?;
            (&quoted[..close], &quoted[close + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        params.push((name.to_owned(), value.to_owned()));
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

/// Refuses a resource whose host the vault's host does not lie under (see the module's
/// documentation). `vault_host` is the host of the configured `vault_url`.
pub(crate) fn verify_resource(vault_host: &str, resource: &str) -> Result<(), String> {
    let resource_host = reqwest::Url::parse(resource)
        .ok()
        .filter(|url| url.scheme() == "https")
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .ok_or_else(|| format!("the vault's challenge names {resource:?}, which is not an https:// resource"))?;
    let vault_host = vault_host.to_ascii_lowercase();
    if vault_host.ends_with(&format!(".{resource_host}")) {
        Ok(())
    } else {
        Err(format!(
            "the vault at {vault_host} asks for a token for {resource}, whose host {resource_host} is not a parent \
             of the vault's host; refusing to request it (set kms.azure.resource if the vault is reached under a \
             name of your own)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "00000000-0000-0000-0000-000000000001";

    fn challenge(authority: &str, resource: &str) -> String {
        format!("Bearer authorization=\"{authority}/{TENANT}\", resource=\"{resource}\"")
    }

    #[test]
    fn the_resource_comes_from_resource_or_scope() {
        let public = challenge("https://login.microsoftonline.com", "https://vault.azure.net");
        assert_eq!(challenge_resource(&public).as_deref(), Some("https://vault.azure.net"));
        let scope = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{TENANT}\", scope=\"https://managedhsm.azure.net/.default\""
        );
        assert_eq!(challenge_resource(&scope).as_deref(), Some("https://managedhsm.azure.net"));
        // Case-insensitive scheme and names, unquoted values, a second challenge after it.
        let mixed = "bearer Authorization=https://login.microsoftonline.us/x, RESOURCE=https://vault.usgovcloudapi.net/, PoP nonce=\"abc\"";
        assert_eq!(challenge_resource(mixed).as_deref(), Some("https://vault.usgovcloudapi.net"));
        for none in [
            "",
            "Basic realm=\"x\"",
            "Bearer",
            "Bearer authorization=\"https://login.microsoftonline.com/t\"",
            "Bearer resource=\"unterminated",
        ] {
            assert_eq!(challenge_resource(none), None, "{none}");
        }
    }

    #[test]
    fn public_managed_hsm_and_sovereign_vaults_get_their_own_resource() {
        for (host, authority, resource) in [
            ("praxis-kv.vault.azure.net", "https://login.microsoftonline.com", "https://vault.azure.net"),
            ("praxis-hsm.managedhsm.azure.net", "https://login.microsoftonline.com", "https://managedhsm.azure.net"),
            ("praxis-kv.vault.azure.cn", "https://login.chinacloudapi.cn", "https://vault.azure.cn"),
            ("praxis-hsm.managedhsm.azure.cn", "https://login.chinacloudapi.cn", "https://managedhsm.azure.cn"),
            (
                "praxis-kv.vault.usgovcloudapi.net",
                "https://login.microsoftonline.us",
                "https://vault.usgovcloudapi.net",
            ),
            (
                "praxis-hsm.managedhsm.usgovcloudapi.net",
                "https://login.microsoftonline.us",
                "https://managedhsm.usgovcloudapi.net",
            ),
            (
                "praxis-kv.vault.microsoftazure.de",
                "https://login.microsoftonline.de",
                "https://vault.microsoftazure.de",
            ),
            ("PRAXIS-KV.Vault.Azure.Net", "https://login.microsoftonline.com", "https://VAULT.azure.net"),
        ] {
            let found = challenge_resource(&challenge(authority, resource)).unwrap();
            assert_eq!(found, resource);
            assert_eq!(verify_resource(host, &found), Ok(()), "{host}");
        }
    }

    #[test]
    fn a_challenge_naming_a_foreign_resource_is_refused() {
        for (host, resource) in [
            // Another Azure API: a token for it could manage the subscription.
            ("praxis-kv.vault.azure.net", "https://management.azure.com"),
            ("praxis-kv.vault.azure.net", "https://managedhsm.azure.net"),
            ("praxis-hsm.managedhsm.azure.net", "https://vault.azure.net"),
            ("praxis-kv.vault.azure.net", "https://vault.azure.cn"),
            // A look-alike host, a host that only contains the resource, the resource itself.
            ("praxis-kvvault.azure.net", "https://vault.azure.net"),
            ("praxis-kv.vault.azure.net.example.com", "https://vault.azure.net"),
            ("vault.azure.net", "https://vault.azure.net"),
            ("127.0.0.1", "https://vault.azure.net"),
            // Not https.
            ("praxis-kv.vault.azure.net", "http://vault.azure.net"),
            ("praxis-kv.vault.azure.net", "vault.azure.net"),
        ] {
            let error = verify_resource(host, resource).unwrap_err();
            assert!(error.contains(resource), "{error}");
        }
    }
}
