//! Patients: create, read, list (with exact email/phone search through blind indexes), update,
//! GDPR export (Art. 15/20) and erasure by crypto-shredding (Art. 17), legal hold, and the
//! patient's own login.
//!
//! Authorization happens twice: the permission matrix first ([`Error::Forbidden`], audited, when
//! the caller's role or key has no access to the operation at all), then row-level security,
//! which hides rows the caller may not see: a therapist's unassigned patient or another patient's
//! record is [`Error::NotFound`], exactly like a record that does not exist, so a denied read
//! reveals nothing. Every read of a record writes `patient.read` (who read whom) in the same
//! transaction. Personal fields are sealed and opened through [`crate::protection`]; the GDPR
//! export is [`crate::patient_export`].

use crate::protection::{CONTACT_FIELDS, SealingKey, email_index, open_fields, phone_index, seal_fields};
use crate::{Caller, Error, FieldProblem, Result, Services};
use ::patients::{NewPatient, PatientData, PatientField, PatientPatch, ValidationErrors};
use audit::{Action, AuditEvent};
use crypto::DataKey;
use identity::{Permission, Scope};
use kernel::{PatientId, Role, Secret, TenantId, UserId};
use serde_json::json;
use sqlx::PgConnection;
use store_postgres::identity::UserRecord;
use store_postgres::patients::{self as store, PatientChange, PatientQuery, PatientRow};
use time::OffsetDateTime;

/// Patients per listing page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most patients per listing page.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A patient record as the caller may see it: clinical fields are set only for callers who may
/// read clinical data.
#[derive(Debug, Clone)]
pub struct Patient {
    pub id: PatientId,
    pub assigned_therapist: Option<UserId>,
    pub legal_hold: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub data: PatientData,
}

impl Patient {
    pub(crate) fn new(row: &PatientRow, data: PatientData) -> Self {
        Self {
            id: row.id,
            assigned_therapist: row.assigned_therapist,
            legal_hold: row.legal_hold,
            created_at: row.created_at,
            updated_at: row.updated_at,
            data,
        }
    }
}

/// Which patients a listing wants. An email or phone finds exact matches through the blind
/// index (an email case-insensitively).
#[derive(Debug, Clone, Default)]
pub struct PatientSearch {
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<PatientId>,
    /// 1 to [`MAX_PAGE_SIZE`]; [`DEFAULT_PAGE_SIZE`] when absent.
    pub limit: Option<u32>,
}

/// A page of patients, oldest first.
#[derive(Debug, Clone)]
pub struct PatientList {
    pub patients: Vec<Patient>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<PatientId>,
}

/// What erasing a patient did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erasure {
    /// DEK generations destroyed: every ciphertext sealed under them is now unreadable.
    pub keys_destroyed: u64,
    /// The patient's own logins, disabled and scrubbed.
    pub accounts_disabled: u64,
}

/// A login for a patient, linked to their record.
#[derive(Debug)]
pub struct NewPatientAccount {
    pub email: String,
    pub password: Secret<String>,
}

impl Services {
    /// Creates a patient (`patient.create`; clinical notes also need `patient.write_clinical`):
    /// validated fields sealed under the patient's new DEK, blind indexes of email and phone,
    /// audited as `key.generate` and `patient.create`. Returns the record as the caller may see
    /// it.
    pub async fn create_patient(&self, caller: &Caller, new: NewPatient) -> Result<Patient> {
        self.authorize(caller, Permission::PatientCreate, "patient").await?;
        let valid = new.validate(self.clock.now().date()).map_err(invalid_fields)?;
        if valid.data.clinical_notes.is_some() {
            self.authorize(caller, Permission::PatientWriteClinical, "patient").await?;
        }
        let tenant = caller.tenant;
        let id = PatientId::from_uuid(uuid::Uuid::now_v7());
        let index_key = self.blind_index_key(caller).await?;
        // The KMS call happens before the transaction opens, so no row lock waits on the network.
        let key = self.new_patient_dek(tenant, id).await?;
        let fields = seal_fields(&key, tenant, id, &valid.data, &PatientField::ALL)?;
        let assigned_therapist = valid.assigned_therapist.map(UserId::from_uuid);
        let now = self.clock.now();

        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        if let Some(therapist) = assigned_therapist {
            check_therapist(&mut tx, tenant, therapist).await?;
        }
        store_postgres::keys::insert(
            &mut tx,
            &store_postgres::keys::NewPatientKey {
                tenant,
                patient: id,
                generation: key.generation,
                kek_id: key.wrapped.kek_id.clone(),
                kek_version: key.wrapped.kek_version.clone(),
                wrapped_dek: key.wrapped.ciphertext.clone(),
                created_at: now,
            },
        )
        .await?;
        store::insert(
            &mut tx,
            &store::NewPatientRow {
                id,
                tenant,
                dek_generation: key.generation,
                assigned_therapist,
                fields,
                email_index: valid.data.email.as_deref().map(|e| email_index(&index_key, e)),
                phone_index: valid.data.phone.as_deref().map(|p| phone_index(&index_key, p)),
                created_at: now,
            },
        )
        .await?;
        let generate = caller
            .audit_event(Action::KeyGenerate, "patient_key", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({
                "generation": key.generation,
                "kek_id": key.wrapped.kek_id,
                "kek_version": key.wrapped.kek_version,
            }));
        store_postgres::audit::append(&mut tx, generate).await?;
        let fields_set: Vec<&str> = PatientField::ALL
            .iter()
            .filter(|f| valid.data.stored_text(**f).is_some())
            .map(|f| f.aad_column())
            .collect();
        let event = caller
            .audit_event(Action::PatientCreate, "patient", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({ "fields": fields_set }));
        store_postgres::audit::append(&mut tx, event).await?;
        let row = store::get(&mut tx, tenant, id, false).await?.ok_or(Error::NotFound)?;
        tx.commit().await?;

        self.remember_patient_dek(tenant, id, &key)?;
        let mut data = valid.data;
        if !reads_clinical(caller) {
            data.clinical_notes = None;
        }
        Ok(Patient::new(&row, data))
    }

    /// One patient the caller may see (`patient.read_contact`), decrypted minus what the caller
    /// may not read; audited as `patient.read`.
    pub async fn read_patient(&self, caller: &Caller, id: PatientId) -> Result<Patient> {
        self.authorize(caller, Permission::PatientReadContact, "patient").await?;
        self.with_patient_keys(|keys| async move {
            // Its own transaction in one statement, under the caller's context (the hottest read).
            let row = live(store::get_in_one_statement(&self.db, &caller.db_context(), caller.tenant, id).await?)?;
            let (deks, mut entries) = self.patient_deks_for_read(caller, &keys, std::slice::from_ref(&row))?;
            let (patient, read) = self.open_read(caller, &row, &deks[0])?;
            entries.push(read);
            // Nothing is returned, and no DEK this attempt unwrapped joins the shared cache,
            // before the read (and the unwrap) are in the audit trail (`access_log`).
            self.record_reads(entries).await?;
            Ok(patient)
        })
        .await
    }

    /// The patients the caller may see (a therapist: assigned ones; a patient: themself), a page
    /// at a time, optionally only those with an email or phone; each one returned is audited as
    /// `patient.read`.
    pub async fn list_patients(&self, caller: &Caller, search: PatientSearch) -> Result<PatientList> {
        self.authorize(caller, Permission::PatientReadContact, "patient").await?;
        let limit = search.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(Error::invalid("limit", format!("must be between 1 and {MAX_PAGE_SIZE}")));
        }
        if let Some(email) = &search.email
            && (email.trim().is_empty() || email.len() > ::patients::EMAIL_MAX_LEN)
        {
            return Err(Error::invalid("email", "must be an email address of at most 254 characters"));
        }
        if let Some(phone) = &search.phone
            && !is_e164(phone)
        {
            return Err(Error::invalid("phone", "must be an E.164 number such as +4915112345678"));
        }
        let mut filter = PatientQuery::default();
        if search.email.is_some() || search.phone.is_some() {
            let key = self.blind_index_key(caller).await?;
            filter.email_index = search.email.as_deref().map(|e| email_index(&key, e));
            filter.phone_index = search.phone.as_deref().map(|p| phone_index(&key, p));
        }
        let page_size = usize::try_from(limit).map_err(Error::internal)?;
        let cursor = search.cursor;
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin_read_only(&self.db, &caller.db_context()).await?;
            let mut rows = store::list(tx.conn(), caller.tenant, filter, cursor, limit + 1).await?;
            tx.finish();
            let more = rows.len() > page_size;
            rows.truncate(page_size);
            let (deks, mut entries) = self.patient_deks_for_read(caller, &keys, &rows)?;
            let mut patients = Vec::with_capacity(rows.len());
            for (row, dek) in rows.iter().zip(&deks) {
                let (patient, read) = self.open_read(caller, row, dek)?;
                patients.push(patient);
                entries.push(read);
            }
            let next_cursor = if more { rows.last().map(|r| r.id) } else { None };
            // As in `read_patient`: nothing leaves before its entries are in the trail.
            self.record_reads(entries).await?;
            Ok(PatientList { patients, next_cursor })
        })
        .await
    }

    /// Applies a JSON merge patch (`patient.update_contact`; clinical fields also need
    /// `patient.write_clinical`, (re)assigning a therapist practice-wide patient management),
    /// audited as `patient.update` with the changed field names. Returns the stored result as
    /// the caller may see it, or `None` when the record is no longer visible to the caller.
    pub async fn update_patient(&self, caller: &Caller, id: PatientId, patch: PatientPatch) -> Result<Option<Patient>> {
        self.authorize(caller, Permission::PatientUpdateContact, "patient").await?;
        let patch = patch.validate(self.clock.now().date()).map_err(invalid_fields)?;
        let changed = patch.changed_fields();
        if changed.iter().any(|f| f.is_clinical()) {
            self.authorize(caller, Permission::PatientWriteClinical, "patient").await?;
        }
        if !patch.assigned_therapist.is_absent() && caller.scope(Permission::PatientCreate) != Scope::Tenant {
            self.authorize(caller, Permission::UserManage, "patient").await?;
        }
        let index_key = if patch.email.is_absent() && patch.phone.is_absent() {
            None
        } else {
            Some(self.blind_index_key(caller).await?)
        };
        let tenant = caller.tenant;
        let (patch, changed, index_key) = (&patch, &changed, &index_key);
        self.with_patient_keys(|keys| async move {
            let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
            let row = live_patient(&mut tx, tenant, id, Lock::ForUpdate).await?;
            if let Some(therapist) = patch.assigned_therapist.as_set() {
                check_therapist(&mut tx, tenant, UserId::from_uuid(*therapist)).await?;
            }
            let key = SealingKey {
                dek: self.patient_dek(&mut tx, caller, &keys, &row).await?,
                wrapped: crate::protection::wrapped_of(&row)?,
                generation: row.dek_generation,
            };
            let mut new_data = PatientData::default();
            patch.apply(&mut new_data);
            let sealed = seal_fields(&key, tenant, id, &new_data, changed)?;
            let mut change = PatientChange::default();
            for field in changed {
                change.fields.insert(*field, sealed.get(field).cloned());
            }
            if let Some(index_key) = index_key {
                if !patch.email.is_absent() {
                    change.email_index = Some(new_data.email.as_deref().map(|e| email_index(index_key, e)));
                }
                if !patch.phone.is_absent() {
                    change.phone_index = Some(new_data.phone.as_deref().map(|p| phone_index(index_key, p)));
                }
            }
            if !patch.assigned_therapist.is_absent() {
                change.assigned_therapist = Some(patch.assigned_therapist.as_set().map(|t| UserId::from_uuid(*t)));
            }
            if !store::update(&mut tx, tenant, id, &change, self.clock.now()).await? {
                return Err(Error::NotFound);
            }
            let mut names: Vec<&str> = changed.iter().map(|f| f.aad_column()).collect();
            if !patch.assigned_therapist.is_absent() {
                names.push("assigned_therapist_id");
            }
            let event = caller
                .audit_event(Action::PatientUpdate, "patient", self.clock())
                .with_resource_id(id.to_string())
                .with_detail(json!({ "fields": names }));
            store_postgres::audit::append(&mut tx, event).await?;
            // Answer with the stored result (this also proves it decrypts), visible to this caller.
            let updated = match live_patient(&mut tx, tenant, id, Lock::No).await {
                Ok(row) => Some(Patient::new(&row, open_fields(&key.dek, &row, readable_fields(caller))?)),
                // Only practice-wide roles (re)assign, so a caller cannot unassign itself out of
                // view; a row that left the view anyway is not an error of the update itself.
                Err(Error::NotFound) => None,
                Err(other) => return Err(other),
            };
            tx.commit().await?;
            Ok(updated)
        })
        .await
    }

    /// Sets a legal hold (`patient.erase`): erasure is refused while it is set. Audited as
    /// `patient.legal_hold`.
    pub async fn set_legal_hold(&self, caller: &Caller, id: PatientId) -> Result<()> {
        self.change_legal_hold(caller, id, LegalHold::Set).await
    }

    /// Lifts a legal hold (`patient.erase`), audited as `patient.legal_hold`.
    pub async fn lift_legal_hold(&self, caller: &Caller, id: PatientId) -> Result<()> {
        self.change_legal_hold(caller, id, LegalHold::Lifted).await
    }

    async fn change_legal_hold(&self, caller: &Caller, id: PatientId, hold: LegalHold) -> Result<()> {
        self.authorize(caller, Permission::PatientErase, "patient").await?;
        let held = hold == LegalHold::Set;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        live_patient(&mut tx, caller.tenant, id, Lock::ForUpdate).await?;
        if !store::set_legal_hold(&mut tx, caller.tenant, id, held, self.clock.now()).await? {
            return Err(Error::NotFound);
        }
        let event = caller
            .audit_event(Action::PatientLegalHold, "patient", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({ "legal_hold": held }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Erases a patient by crypto-shredding (`patient.erase`; refused with [`Error::LegalHold`]
    /// while a hold is set): their DEKs are destroyed, so every ciphertext of theirs, wherever
    /// copied, is undecryptable; the record becomes a tombstone, their message log goes, their
    /// logins are disabled and scrubbed, future appointments cancelled. Audited as
    /// `key.destroy` and `patient.erase`.
    pub async fn erase_patient(&self, caller: &Caller, id: PatientId) -> Result<Erasure> {
        self.authorize(caller, Permission::PatientErase, "patient").await?;
        let tenant = caller.tenant;
        let now = self.clock.now();
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        let row = live_patient(&mut tx, tenant, id, Lock::ForUpdate).await?;
        if row.legal_hold {
            return Err(Error::LegalHold);
        }
        let keys_destroyed = store_postgres::keys::destroy_all(&mut tx, tenant, id, now).await?;
        // The message log links the patient to what they sent (digests, times): it goes too.
        store_postgres::webhooks::erase_patient_messages(&mut tx, tenant, id).await?;
        if !store::tombstone(&mut tx, tenant, id, now).await? {
            return Err(Error::NotFound);
        }
        let accounts_disabled = store::erase_linked_accounts(&mut tx, tenant, id, now).await?;
        // Future appointments are cancelled, pending reminders dropped, note ciphertexts removed.
        store_postgres::appointments::erase_patient_data(&mut tx, tenant, id, now).await?;
        let destroy = caller
            .audit_event(Action::KeyDestroy, "patient_key", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({ "generations_destroyed": keys_destroyed }));
        store_postgres::audit::append(&mut tx, destroy).await?;
        let event = caller
            .audit_event(Action::PatientErase, "patient", self.clock())
            .with_resource_id(id.to_string())
            .with_detail(json!({ "keys_destroyed": keys_destroyed, "accounts_disabled": accounts_disabled }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        // This process forgets the DEK now; other instances hold a cached copy at most for the
        // cache's max age, and refuse meanwhile because they read the tombstone first.
        self.dek_cache.remove_patient(tenant, id);
        Ok(Erasure { keys_destroyed, accounts_disabled })
    }

    /// Creates the patient's own login (`user.manage`), role `patient`: it sees only its own
    /// data. One per patient; the email must be free in the practice. Audited as `user.create`.
    pub async fn create_patient_account(
        &self,
        caller: &Caller,
        id: PatientId,
        account: NewPatientAccount,
    ) -> Result<UserRecord> {
        self.authorize(caller, Permission::UserManage, "user").await?;
        let NewPatientAccount { email, password } = account;
        let email = identity::account_email(&email).map_err(|message| Error::invalid("email", message))?;
        identity::PasswordPolicy::default()
            .check(password.expose_secret(), &[&email])
            .map_err(|problem| Error::invalid("password", problem.to_string()))?;
        let password_hash = self.hash_password(password).await?;
        let tenant = caller.tenant;
        let mut tx = store_postgres::begin(&self.db, &caller.db_context()).await?;
        live_patient(&mut tx, tenant, id, Lock::ForUpdate).await?;
        if store_postgres::identity::find_user_by_email(&mut tx, &email).await?.is_some()
            || store::has_account(&mut tx, tenant, id).await?
        {
            return Err(Error::Conflict("The patient has an account, or an account uses this email.".into()));
        }
        let user = store_postgres::identity::NewUser {
            id: UserId::new(),
            tenant,
            email,
            role: Role::Patient,
            patient: Some(id),
            password_hash,
            created_at: self.clock.now(),
        };
        store_postgres::identity::insert_user(&mut tx, &user).await?;
        let event = caller
            .audit_event(Action::UserCreate, "user", self.clock())
            .with_resource_id(user.id.to_string())
            .with_detail(json!({ "role": Role::Patient.as_str(), "patient_id": id.to_string() }));
        store_postgres::audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(UserRecord {
            id: user.id,
            tenant,
            email: user.email,
            role: user.role,
            patient: Some(id),
            disabled_at: None,
            created_at: user.created_at,
        })
    }

    /// Opens what the caller may read of `row` with its DEK; returns it with the read's
    /// `patient.read` entry, which the caller records ([`Services::record_reads`]) before it
    /// returns the patient.
    fn open_read(&self, caller: &Caller, row: &PatientRow, dek: &DataKey) -> Result<(Patient, AuditEvent)> {
        let data = open_fields(dek, row, readable_fields(caller))?;
        let event = caller
            .audit_event(Action::PatientRead, "patient", self.clock())
            .with_resource_id(row.id.to_string())
            .with_detail(json!({ "clinical": reads_clinical(caller) }));
        Ok((Patient::new(row, data), event))
    }
}

/// Whether a change sets or lifts the legal hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegalHold {
    Set,
    Lifted,
}

/// Whether a read locks the patient row until the transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    No,
    ForUpdate,
}

/// The row of patient `id` if it is visible to the transaction's context and not erased:
/// [`Error::NotFound`] when invisible or absent (not told apart), [`Error::Gone`] when erased.
pub async fn live_patient(conn: &mut PgConnection, tenant: TenantId, id: PatientId, lock: Lock) -> Result<PatientRow> {
    live(store::get(conn, tenant, id, lock == Lock::ForUpdate).await?)
}

/// A looked-up row as [`live_patient`] answers it.
fn live(row: Option<PatientRow>) -> Result<PatientRow> {
    let row = row.ok_or(Error::NotFound)?;
    if row.erased_at.is_some() {
        return Err(Error::Gone);
    }
    Ok(row)
}

/// May the caller read clinical data of the patients it can see?
fn reads_clinical(caller: &Caller) -> bool {
    caller.scope(Permission::PatientReadClinical) != Scope::Denied
}

/// The fields the caller reads: the clinical ones only when it may.
fn readable_fields(caller: &Caller) -> &'static [PatientField] {
    if reads_clinical(caller) { &PatientField::ALL } else { &CONTACT_FIELDS }
}

/// Only an enabled therapist of the practice can be assigned.
async fn check_therapist(conn: &mut PgConnection, tenant: TenantId, therapist: UserId) -> Result<()> {
    match store::enabled_user_role(conn, tenant, therapist).await?.as_deref() {
        Some("therapist") => Ok(()),
        _ => Err(Error::invalid("assigned_therapist_id", "must be an enabled therapist of this practice")),
    }
}

/// An E.164 number: `+` and at most 15 digits.
fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit()))
}

fn invalid_fields(errors: ValidationErrors) -> Error {
    Error::Invalid(errors.errors.into_iter().map(|e| FieldProblem { field: e.field, message: e.message }).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A practice (operator caller) with one patient, "Ada Example", on a fresh database.
    async fn one_patient(practice: &str) -> (testkit::TestDb, Services, Caller, Patient) {
        let db = testkit::TestDb::new().await;
        let services = crate::test_services::on(db.app_pool.clone(), None);
        let tenant = crate::test_services::practice(&db.app_pool, practice).await;
        let caller = Caller::operator(tenant);
        let new = NewPatient { name: "Ada Example".into(), ..NewPatient::default() };
        let created = services.create_patient(&caller, new).await.unwrap();
        (db, services, caller, created)
    }

    /// How many audit entries of `action` the caller's practice holds, read as the runtime role.
    async fn entries(db: &testkit::TestDb, caller: &Caller, action: &str) -> i64 {
        let mut tx = store_postgres::begin(&db.app_pool, &caller.db_context()).await.unwrap();
        let n = sqlx::query_scalar("SELECT count(*) FROM audit_entries WHERE action = $1")
            .bind(action)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    }

    /// A read whose DEK is not cached unwraps it through the KMS once and counts one cache miss
    /// (the `praxis.dek_cache.lookups` metric says "every miss is one KMS unwrap"), though the
    /// read runs twice: once to find the DEK missing, once with it in hand. The next read hits.
    #[tokio::test]
    async fn an_uncached_read_is_one_miss_and_one_recorded_unwrap() {
        let (db, services, caller, created) = one_patient("Cache").await;
        services.dek_cache.clear();
        let before = services.dek_cache.stats();

        let read = services.read_patient(&caller, created.id).await.unwrap();
        assert_eq!(read.data.name, "Ada Example");
        let after_first = services.dek_cache.stats();
        assert_eq!(after_first.misses - before.misses, 1);
        assert_eq!(after_first.hits, before.hits);

        services.read_patient(&caller, created.id).await.unwrap();
        let after_second = services.dek_cache.stats();
        assert_eq!((after_second.hits - after_first.hits, after_second.misses - after_first.misses), (1, 0));

        assert_eq!(entries(&db, &caller, "key.unwrap").await, 1);
    }

    /// A read whose `patient.read` entry cannot be committed is not answered: the caller gets an
    /// error and none of the data, for a single read and for a listing.
    #[tokio::test]
    async fn a_read_whose_audit_entry_does_not_commit_returns_no_data() {
        let (db, services, caller, created) = one_patient("Refused").await;
        services.read_patient(&caller, created.id).await.unwrap();
        let before = services.list_patients(&caller, PatientSearch::default()).await.unwrap();
        assert_eq!(before.patients.len(), 1, "the caller may list: the refusal below is the entry's");

        let unwraps_before = entries(&db, &caller, "key.unwrap").await;

        // The owner makes the database refuse every new read entry (and nothing else).
        sqlx::raw_sql(
            "CREATE FUNCTION refuse_reads() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'reads refused for this test'; END $$; \
             CREATE TRIGGER refuse_reads BEFORE INSERT ON audit_entries FOR EACH ROW \
             WHEN (NEW.action = 'patient.read') EXECUTE FUNCTION refuse_reads();",
        )
        .execute(&db.owner_pool)
        .await
        .unwrap();
        // The key is not cached: the refused reads unwrap it, and their `key.unwrap` entry is
        // refused with them.
        services.dek_cache.clear();
        let read = services.read_patient(&caller, created.id).await;
        assert!(read.is_err(), "a read without its entry is not answered: {read:?}");
        let listed = services.list_patients(&caller, PatientSearch::default()).await;
        assert!(listed.is_err(), "a listing without its entries is not answered");
        assert_eq!(
            entries(&db, &caller, "patient.read").await,
            2,
            "only the read and the listing before the refusal were recorded"
        );
        assert_eq!(
            entries(&db, &caller, "key.unwrap").await,
            unwraps_before,
            "the refused reads recorded no unwrap either"
        );

        // No DEK joined the shared cache without its unwrap on the trail: once entries are
        // accepted again, the next read unwraps the key anew and records it.
        sqlx::raw_sql("DROP TRIGGER refuse_reads ON audit_entries").execute(&db.owner_pool).await.unwrap();
        services.read_patient(&caller, created.id).await.unwrap();
        assert_eq!(entries(&db, &caller, "key.unwrap").await, unwraps_before + 1);
        assert_eq!(entries(&db, &caller, "patient.read").await, 3);
    }

    #[test]
    fn a_search_phone_is_plus_and_digits() {
        assert!(is_e164("+4915112345678"));
        assert!(!is_e164("4915112345678"));
        assert!(!is_e164("+49 151"));
        assert!(!is_e164("+1234567890123456"));
    }
}
