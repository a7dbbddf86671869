//! Practices and their accounts: creating a practice with its first admin, accounts, API keys,
//! ending an account's access (disable, revoke its sessions), and a signed-in account's own
//! record and password.

use crate::{Caller, Error, Result, Services};
use audit::Action;
use identity::{ApiKeyToken, ApiScope, Permission};
use kernel::{Actor, Role, Secret, TenantId, UserId};
use serde_json::json;
use store_postgres::DbContext;
use store_postgres::identity as accounts;
pub use store_postgres::identity::{ApiKeyRecord, UserRecord};

/// Longest practice name.
pub const PRACTICE_NAME_MAX_CHARS: usize = 200;
/// Longest API key name.
pub const API_KEY_NAME_MAX_CHARS: usize = 100;
/// Most scopes one API key may hold.
pub const API_KEY_MAX_SCOPES: usize = 16;
/// Longest API key lifetime, in days.
pub const API_KEY_MAX_DAYS: u32 = 3650;

/// A practice that was just created, with its first admin's one-time password.
#[derive(Debug)]
pub struct CreatedPractice {
    pub tenant: TenantId,
    pub admin: UserId,
    pub admin_email: String,
    /// Shown once to the operator, stored only as its argon2id hash.
    pub admin_password: Secret<String>,
}

/// An account to create in the caller's practice.
#[derive(Debug)]
pub struct NewAccount {
    pub email: String,
    pub role: Role,
    pub password: Secret<String>,
}

/// Which account an operation names: the API names accounts by id, an operator by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountRef {
    Id(UserId),
    Email(String),
}

/// A password change as the account's owner submits it.
#[derive(Debug)]
pub struct PasswordChange {
    /// Proves the owner is at the keyboard, not someone holding a stolen session.
    pub current_password: Secret<String>,
    pub new_password: Secret<String>,
}

/// What ending an account's access did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedAccess {
    pub user: UserId,
    pub sessions_ended: u64,
    /// Whether every instance was told at once (the revocation markers were written). When not,
    /// an instance that cached one of the sessions may accept it for up to its principal cache
    /// TTL; the sessions are ended in the database either way.
    pub announced: bool,
}

/// An API key to create.
#[derive(Debug)]
pub struct NewApiKey {
    pub name: String,
    /// Scope names as `identity::ApiScope` spells them.
    pub scopes: Vec<String>,
    /// Lifetime in days; none means no expiry.
    pub expires_in_days: Option<u32>,
}

/// A new API key: the key itself is here only, never stored or shown again.
#[derive(Debug)]
pub struct CreatedApiKey {
    pub id: uuid::Uuid,
    pub key_id: String,
    pub key: Secret<String>,
    pub scopes: Vec<String>,
}

impl Services {
    /// Creates a practice and its first admin account in one transaction, with a generated
    /// one-time password hashed at the configured cost. The practice's audit trail starts with
    /// `practice.create` and the admin's `user.create`, recorded as `actor`'s doing (the
    /// operator's command line, or the development set-up).
    pub async fn create_practice(&self, actor: Actor, name: &str, admin_email: &str) -> Result<CreatedPractice> {
        let name = name.trim();
        let mut problems = Vec::new();
        if name.is_empty() || name.chars().count() > PRACTICE_NAME_MAX_CHARS || name.chars().any(char::is_control) {
            problems.push(crate::FieldProblem {
                field: "name".into(),
                message: format!("must be 1 to {PRACTICE_NAME_MAX_CHARS} characters, without control characters"),
            });
        }
        let email = identity::account_email(admin_email);
        if let Err(message) = email {
            problems.push(crate::FieldProblem { field: "admin_email".into(), message: message.into() });
        }
        let Ok(email) = email else { return Err(Error::Invalid(problems)) };
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }

        let tenant = TenantId::new();
        let admin = UserId::new();
        let password = Secret::new(generate_password()?);
        let password_hash = self.hash_password(Secret::new(password.expose_secret().clone())).await?;
        let now = self.clock.now();
        let caller = Caller { actor, ..Caller::operator(tenant) };

        // The practice's row is visible (and insertable) only to its own admin's context.
        let mut tx = store_postgres::begin(&self.db, &DbContext::user(tenant, admin, Role::Admin)).await?;
        accounts::insert_practice(&mut tx, tenant, name, now).await?;
        accounts::insert_user(
            &mut tx,
            &accounts::NewUser {
                id: admin,
                tenant,
                email: email.clone(),
                role: Role::Admin,
                patient: None,
                password_hash,
                created_at: now,
            },
        )
        .await?;
        let practice_created =
            caller.audit_event(Action::PracticeCreate, "practice", self.clock()).with_resource_id(tenant.to_string());
        let admin_created = caller
            .audit_event(Action::UserCreate, "user", self.clock())
            .with_resource_id(admin.to_string())
            .with_detail(json!({ "role": Role::Admin.as_str() }));
        store_postgres::audit::append_all(&mut tx, vec![practice_created, admin_created]).await?;
        tx.commit().await?;
        Ok(CreatedPractice { tenant, admin, admin_email: email, admin_password: password })
    }

    /// Every account of the caller's practice (`user.read`).
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<UserRecord>> {
        self.authorize(caller, Permission::UserRead, "user").await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let users = accounts::list_users(&mut tx).await?;
        tx.commit().await?;
        Ok(users)
    }

    /// Creates a staff account (`user.manage`): the email in its canonical form, the password
    /// checked against the policy and hashed at the configured cost. Patient accounts are
    /// created with the patient record, never here.
    pub async fn create_user(&self, caller: &Caller, account: NewAccount) -> Result<UserRecord> {
        self.authorize(caller, Permission::UserManage, "user").await?;
        let NewAccount { email, role, password } = account;
        let email = identity::account_email(&email).map_err(|message| Error::invalid("email", message))?;
        if role == Role::Patient {
            return Err(Error::invalid("role", "patient accounts are created from the patient record"));
        }
        identity::PasswordPolicy::default()
            .check(password.expose_secret(), &[&email])
            .map_err(|problem| Error::invalid("password", problem.to_string()))?;
        let password_hash = self.hash_password(password).await?;
        let user = accounts::NewUser {
            id: UserId::new(),
            tenant: caller.tenant,
            email,
            role,
            patient: None,
            password_hash,
            created_at: self.clock.now(),
        };
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        if accounts::find_user_by_email(&mut tx, &user.email).await?.is_some() {
            return Err(Error::Conflict("An account with this email exists in this practice.".into()));
        }
        accounts::insert_user(&mut tx, &user).await?;
        let event = caller
            .audit_event(Action::UserCreate, "user", self.clock())
            .with_resource_id(user.id.to_string())
            .with_detail(json!({ "role": user.role.as_str() }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(UserRecord {
            id: user.id,
            tenant: user.tenant,
            email: user.email,
            role: user.role,
            patient: None,
            disabled_at: None,
            created_at: user.created_at,
        })
    }

    /// Disables an account and ends all of its sessions in one transaction (`user.manage`),
    /// recorded as `user.disable`. Nobody disables their own account.
    pub async fn disable_user(&self, caller: &Caller, account: AccountRef) -> Result<EndedAccess> {
        self.end_access(caller, account, Ending::Disable).await
    }

    /// Ends every session of an account (a lost device, a suspected takeover), recorded as
    /// `auth.session_revoked` (`user.manage`).
    pub async fn revoke_user_sessions(&self, caller: &Caller, account: AccountRef) -> Result<EndedAccess> {
        self.end_access(caller, account, Ending::RevokeSessions).await
    }

    async fn end_access(&self, caller: &Caller, account: AccountRef, ending: Ending) -> Result<EndedAccess> {
        self.authorize(caller, Permission::UserManage, "user").await?;
        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let user = match &account {
            AccountRef::Id(id) => accounts::get_user(&mut tx, *id).await?,
            AccountRef::Email(email) => match identity::account_email(email) {
                Ok(email) => accounts::find_user_by_email(&mut tx, &email).await?,
                Err(_) => None,
            },
        };
        let user = user.ok_or(Error::NotFound)?;
        let action = match ending {
            Ending::Disable if caller.user() == Some(user.id) => {
                return Err(Error::Conflict("You cannot disable your own account.".into()));
            }
            Ending::Disable => {
                accounts::disable_user(&mut tx, user.id, now).await?;
                Action::UserDisable
            }
            Ending::RevokeSessions => Action::AuthSessionRevoked,
        };
        let sessions_ended = accounts::revoke_user_sessions(&mut tx, user.id, now).await?;
        let event = caller
            .audit_event(action, "user", self.clock())
            .with_resource_id(user.id.to_string())
            .with_detail(json!({ "sessions_ended": sessions_ended }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        let announced =
            self.announce_revocation(&[cache_redis::Revoked::User { tenant: caller.tenant, user: user.id }]).await;
        Ok(EndedAccess { user: user.id, sessions_ended, announced })
    }

    /// The calling account's own record. Every account may read itself; one that is gone is
    /// [`Error::Unauthenticated`].
    pub async fn own_account(&self, caller: &Caller) -> Result<UserRecord> {
        let user = caller.user().ok_or(Error::Forbidden)?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let record = accounts::get_user(&mut tx, user).await?.ok_or(Error::Unauthenticated)?;
        tx.commit().await?;
        Ok(record)
    }

    /// Changes the calling account's password, after verifying its current one and checking
    /// the new one against the policy, hashed at the configured cost; ends every session of the
    /// account (the caller's too) in the same transaction, recorded as `auth.session_revoked`.
    /// Returns how many sessions ended.
    pub async fn change_own_password(&self, caller: &Caller, change: PasswordChange) -> Result<u64> {
        let user = caller.user().ok_or(Error::Forbidden)?;
        let PasswordChange { current_password, new_password } = change;
        if current_password.expose_secret().len() > crate::sessions::PASSWORD_MAX_BYTES {
            return Err(Error::invalid("current_password", "must be at most 1024 bytes"));
        }
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let record = accounts::get_user(&mut tx, user).await?.ok_or(Error::Unauthenticated)?;
        let stored = accounts::password_hash_of(&mut tx, user).await?.ok_or(Error::Unauthenticated)?;
        tx.commit().await?;

        identity::PasswordPolicy::default()
            .check(new_password.expose_secret(), &[&record.email])
            .map_err(|problem| Error::invalid("new_password", problem.to_string()))?;
        let hasher = self.hasher.clone();
        // argon2 is CPU-bound: verifying and hashing run off the async threads.
        let new_hash = tokio::task::spawn_blocking(move || -> Result<Option<String>, identity::IdentityError> {
            if !hasher.verify(current_password.expose_secret(), &stored)? {
                return Ok(None);
            }
            hasher.hash(new_password.expose_secret()).map(Some)
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?
        .ok_or_else(|| Error::invalid("current_password", "does not match"))?;

        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        accounts::set_password(&mut tx, user, &new_hash, now).await?;
        let sessions_ended = accounts::revoke_user_sessions(&mut tx, user, now).await?;
        let event = caller
            .audit_event(Action::AuthSessionRevoked, "user", self.clock())
            .with_resource_id(user.to_string())
            .with_detail(json!({ "reason": "password_changed", "sessions_ended": sessions_ended }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        self.announce_revocation(&[cache_redis::Revoked::User { tenant: caller.tenant, user }]).await;
        Ok(sessions_ended)
    }

    /// Every API key of the practice, revoked ones included (`apikey.manage`).
    pub async fn list_api_keys(&self, caller: &Caller) -> Result<Vec<ApiKeyRecord>> {
        self.authorize(caller, Permission::ApiKeyManage, "api_key").await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let keys = accounts::list_api_keys(&mut tx).await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// Creates an API key owned by the calling account (`apikey.manage`); only its hash is
    /// stored.
    pub async fn create_api_key(&self, caller: &Caller, new_key: NewApiKey) -> Result<CreatedApiKey> {
        self.authorize(caller, Permission::ApiKeyManage, "api_key").await?;
        // A key is created by an account, which stays responsible for it.
        let created_by = caller.user().ok_or(Error::Forbidden)?;
        let NewApiKey { name, scopes, expires_in_days } = new_key;
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > API_KEY_NAME_MAX_CHARS {
            return Err(Error::invalid("name", format!("must be 1 to {API_KEY_NAME_MAX_CHARS} characters")));
        }
        if scopes.is_empty() || scopes.len() > API_KEY_MAX_SCOPES {
            return Err(Error::invalid("scopes", format!("must list 1 to {API_KEY_MAX_SCOPES} scopes")));
        }
        let parsed: Vec<ApiScope> = scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|_| Error::invalid("scopes", "unknown scope"))?;
        if expires_in_days.is_some_and(|days| days == 0 || days > API_KEY_MAX_DAYS) {
            return Err(Error::invalid("expires_in_days", format!("must be between 1 and {API_KEY_MAX_DAYS}")));
        }
        let now = self.clock.now();
        let token = ApiKeyToken::generate(caller.tenant, &ring::rand::SystemRandom::new()).map_err(Error::internal)?;
        let key = accounts::NewApiKey {
            id: uuid::Uuid::now_v7(),
            tenant: caller.tenant,
            key_id: token.key_id().to_string(),
            name,
            token_hash: *token.hash().as_bytes(),
            scopes: parsed.iter().map(|s| s.as_str().to_owned()).collect(),
            created_by,
            created_at: now,
            expires_at: expires_in_days.map(|days| now + time::Duration::days(i64::from(days))),
        };
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        accounts::insert_api_key(&mut tx, &key).await?;
        let event =
            caller.audit_event(Action::ApiKeyCreate, "api_key", self.clock()).with_resource_id(key.key_id.clone());
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        let secret = token.display_once();
        Ok(CreatedApiKey {
            id: key.id,
            key_id: key.key_id,
            key: Secret::new(secret.as_str().to_owned()),
            scopes: key.scopes,
        })
    }

    /// Revokes an API key of the practice (`apikey.manage`); unknown ids are [`Error::NotFound`].
    /// Every instance refuses the key from its next request on (`Services::announce_revocation`).
    pub async fn revoke_api_key(&self, caller: &Caller, id: uuid::Uuid) -> Result<()> {
        self.authorize(caller, Permission::ApiKeyManage, "api_key").await?;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let key_id = accounts::revoke_api_key(&mut tx, id, self.clock.now()).await?.ok_or(Error::NotFound)?;
        let event = caller.audit_event(Action::ApiKeyRevoke, "api_key", self.clock()).with_resource_id(id.to_string());
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        self.announce_revocation(&[cache_redis::Revoked::ApiKey { tenant: caller.tenant, key_id }]).await;
        Ok(())
    }
}

/// How an account's access ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Disable,
    RevokeSessions,
}

/// A one-time password: 24 characters from a 64-symbol alphabet, 144 bits from the system's
/// CSPRNG.
fn generate_password() -> Result<String> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal(anyhow::anyhow!("system random source failed")))?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b & 63)])).collect())
}
