//! The permission matrix: which role may do what, and over which records.
//!
//! Why a matrix in code and not only RLS policies: Postgres row-level security is the net that
//! holds even when a handler forgets a check (a query sees only rows the caller may see), but RLS
//! answers "which rows", not "may this role call this endpoint at all". The API checks
//! [`allowed`] first and refuses with 403 before touching the database; RLS then restricts the
//! rows. Both encode the same rules, and `PERMISSIONS.md` (generated from [`matrix_markdown`],
//! checked by a unit test) is what reviewers and the RLS policies are compared against.
//!
//! The matrix is a `match` with no wildcard arm over permissions: adding a [`Permission`] does not
//! compile until every role has an explicit answer for it.

use crate::error::IdentityError;
use kernel::Role;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Something a caller may want to do. The `as_str` names are stable: they appear in audit
/// entries, logs and `PERMISSIONS.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Create a patient record (intake).
    PatientCreate,
    /// Read a patient's identity and contact data: name, date of birth, phone, email, address.
    PatientReadContact,
    /// Read clinical data: diagnoses, session notes, treatment plans.
    PatientReadClinical,
    /// Change identity and contact data (also the patient's right to rectification).
    PatientUpdateContact,
    /// Write clinical data (session notes, diagnoses).
    PatientWriteClinical,
    /// Export everything held about a patient (GDPR Art. 15 access and Art. 20 portability).
    PatientExport,
    /// Erase a patient by crypto-shredding (GDPR Art. 17, after legal retention periods).
    PatientErase,
    /// See which purposes a patient consented to (e.g. may we send SMS reminders).
    ConsentRead,
    /// Record a consent being given or withdrawn.
    ConsentRecord,
    /// See appointments.
    AppointmentRead,
    /// Book, move and cancel appointments.
    AppointmentManage,
    /// Working hours, rooms, absences: the calendar appointments are booked into.
    CalendarManage,
    /// See the practice's staff directory (who can be booked).
    UserRead,
    /// Invite, change the role of, deactivate staff and patient logins.
    UserManage,
    /// Create and revoke API keys.
    ApiKeyManage,
    /// Read the audit trail.
    AuditRead,
    /// Run the audit hash-chain verification.
    AuditVerify,
    /// Sign out one's own sessions (e.g. "sign out everywhere else").
    SessionRevokeOwn,
    /// Sign out any user of the practice (a lost laptop, a leaving employee).
    SessionRevokeAny,
}

impl Permission {
    /// Every permission, in the order of the matrix.
    pub const ALL: [Permission; 19] = [
        Permission::PatientCreate,
        Permission::PatientReadContact,
        Permission::PatientReadClinical,
        Permission::PatientUpdateContact,
        Permission::PatientWriteClinical,
        Permission::PatientExport,
        Permission::PatientErase,
        Permission::ConsentRead,
        Permission::ConsentRecord,
        Permission::AppointmentRead,
        Permission::AppointmentManage,
        Permission::CalendarManage,
        Permission::UserRead,
        Permission::UserManage,
        Permission::ApiKeyManage,
        Permission::AuditRead,
        Permission::AuditVerify,
        Permission::SessionRevokeOwn,
        Permission::SessionRevokeAny,
    ];

    /// Stable machine name, e.g. `patient.read_clinical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::PatientCreate => "patient.create",
            Permission::PatientReadContact => "patient.read_contact",
            Permission::PatientReadClinical => "patient.read_clinical",
            Permission::PatientUpdateContact => "patient.update_contact",
            Permission::PatientWriteClinical => "patient.write_clinical",
            Permission::PatientExport => "patient.export",
            Permission::PatientErase => "patient.erase",
            Permission::ConsentRead => "consent.read",
            Permission::ConsentRecord => "consent.record",
            Permission::AppointmentRead => "appointment.read",
            Permission::AppointmentManage => "appointment.manage",
            Permission::CalendarManage => "calendar.manage",
            Permission::UserRead => "user.read",
            Permission::UserManage => "user.manage",
            Permission::ApiKeyManage => "api_key.manage",
            Permission::AuditRead => "audit.read",
            Permission::AuditVerify => "audit.verify",
            Permission::SessionRevokeOwn => "session.revoke_own",
            Permission::SessionRevokeAny => "session.revoke_any",
        }
    }

    /// One line for humans (used in `PERMISSIONS.md`).
    pub const fn description(self) -> &'static str {
        match self {
            Permission::PatientCreate => "Create a patient record",
            Permission::PatientReadContact => "Read a patient's identity and contact data",
            Permission::PatientReadClinical => "Read clinical data (diagnoses, session notes)",
            Permission::PatientUpdateContact => "Change identity and contact data",
            Permission::PatientWriteClinical => "Write clinical data",
            Permission::PatientExport => "Export all data about a patient (GDPR Art. 15/20)",
            Permission::PatientErase => "Erase a patient by crypto-shredding (GDPR Art. 17)",
            Permission::ConsentRead => "Read consents",
            Permission::ConsentRecord => "Record a consent given or withdrawn",
            Permission::AppointmentRead => "Read appointments",
            Permission::AppointmentManage => "Book, move, cancel appointments",
            Permission::CalendarManage => "Manage working hours, rooms, absences",
            Permission::UserRead => "Read the staff directory",
            Permission::UserManage => "Invite, change role of, deactivate users",
            Permission::ApiKeyManage => "Create and revoke API keys",
            Permission::AuditRead => "Read the audit trail",
            Permission::AuditVerify => "Verify the audit hash chain",
            Permission::SessionRevokeOwn => "Sign out one's own sessions",
            Permission::SessionRevokeAny => "Sign out any user of the practice",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownPermission(s.to_owned()))
    }
}

/// Over which records a role holds a permission. Tenant isolation itself is not a scope: every
/// scope is within the caller's own practice, enforced by RLS on `app.tenant_id`.
///
/// Ordered from narrowest to widest: `Denied < Own < Assigned < Tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Not at all.
    Denied,
    /// Records the caller is the subject of or takes part in: a patient's own record, consents
    /// and appointments; a therapist's own appointments and availability; one's own sessions.
    Own,
    /// Records of patients assigned to the calling therapist (a care relationship).
    Assigned,
    /// Every record of the practice.
    Tenant,
}

impl Scope {
    pub const fn is_denied(self) -> bool {
        matches!(self, Scope::Denied)
    }

    /// Whether this scope covers a record the caller stands in `relation` to. The app works out
    /// the closest relation (own, else assigned, else merely same practice) and asks.
    pub fn permits(self, relation: Relation) -> bool {
        let needed = match relation {
            Relation::Own => Scope::Own,
            Relation::Assigned => Scope::Assigned,
            Relation::SamePractice => Scope::Tenant,
        };
        self >= needed && !self.is_denied()
    }

    /// Short word for the matrix table.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Denied => "no",
            Scope::Own => "own",
            Scope::Assigned => "assigned",
            Scope::Tenant => "practice",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the caller relates to the record being accessed (within the same practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// The caller is the record's subject or a participant (their own patient record, an
    /// appointment they attend or conduct, their own session).
    Own,
    /// The record belongs to a patient assigned to the calling therapist.
    Assigned,
    /// Neither: just another record of the same practice.
    SamePractice,
}

/// The permission matrix. Rules:
/// - admin: the whole practice, including users, API keys and the audit trail.
/// - therapist: patients assigned to them, including clinical data; their own appointments and
///   availability. No export/erase (the admin handles data-subject requests), no intake.
/// - receptionist: contact and scheduling data of every patient of the practice, consents (they
///   record paper consent forms), the calendar; never clinical data, never exports.
/// - patient: their own record (contact data; clinical data only through an export), their own
///   appointments and consents, an export of themselves. Erasure is a request handled by the
///   admin, because medical records have legal retention periods that must be checked first.
pub const fn allowed(role: Role, permission: Permission) -> Scope {
    use Permission as P;
    use Scope::{Assigned, Denied, Own, Tenant};
    match role {
        Role::Admin => Tenant,
        Role::Therapist => match permission {
            P::PatientReadContact
            | P::PatientReadClinical
            | P::PatientUpdateContact
            | P::PatientWriteClinical
            | P::ConsentRead
            | P::ConsentRecord => Assigned,
            P::AppointmentRead | P::AppointmentManage | P::CalendarManage | P::SessionRevokeOwn => Own,
            P::UserRead => Tenant,
            P::PatientCreate
            | P::PatientExport
            | P::PatientErase
            | P::UserManage
            | P::ApiKeyManage
            | P::AuditRead
            | P::AuditVerify
            | P::SessionRevokeAny => Denied,
        },
        Role::Receptionist => match permission {
            P::PatientCreate
            | P::PatientReadContact
            | P::PatientUpdateContact
            | P::ConsentRead
            | P::ConsentRecord
            | P::AppointmentRead
            | P::AppointmentManage
            | P::CalendarManage
            | P::UserRead => Tenant,
            P::SessionRevokeOwn => Own,
            P::PatientReadClinical
            | P::PatientWriteClinical
            | P::PatientExport
            | P::PatientErase
            | P::UserManage
            | P::ApiKeyManage
            | P::AuditRead
            | P::AuditVerify
            | P::SessionRevokeAny => Denied,
        },
        Role::Patient => match permission {
            P::PatientReadContact
            | P::PatientUpdateContact
            | P::PatientExport
            | P::ConsentRead
            | P::ConsentRecord
            | P::AppointmentRead
            | P::AppointmentManage
            | P::SessionRevokeOwn => Own,
            P::PatientCreate
            | P::PatientReadClinical
            | P::PatientWriteClinical
            | P::PatientErase
            | P::CalendarManage
            | P::UserRead
            | P::UserManage
            | P::ApiKeyManage
            | P::AuditRead
            | P::AuditVerify
            | P::SessionRevokeAny => Denied,
        },
    }
}

/// What an API key may do. A key acts for the whole practice within its scopes (it has no
/// "own" records), so a scope either grants a permission practice-wide or not at all.
///
/// Deliberately absent: any scope reaching clinical data, exports, erasure, users, API keys or
/// sessions. Integrations (a booking widget, a reminder service, an accounting export) need
/// contact and scheduling data; a leaked key must not expose therapy notes or mint more keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiScope {
    PatientsRead,
    PatientsWrite,
    ConsentsRead,
    ConsentsWrite,
    AppointmentsRead,
    AppointmentsWrite,
    AuditRead,
}

impl ApiScope {
    pub const ALL: [ApiScope; 7] = [
        ApiScope::PatientsRead,
        ApiScope::PatientsWrite,
        ApiScope::ConsentsRead,
        ApiScope::ConsentsWrite,
        ApiScope::AppointmentsRead,
        ApiScope::AppointmentsWrite,
        ApiScope::AuditRead,
    ];

    /// The scope's wire name, e.g. `patients:read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiScope::PatientsRead => "patients:read",
            ApiScope::PatientsWrite => "patients:write",
            ApiScope::ConsentsRead => "consents:read",
            ApiScope::ConsentsWrite => "consents:write",
            ApiScope::AppointmentsRead => "appointments:read",
            ApiScope::AppointmentsWrite => "appointments:write",
            ApiScope::AuditRead => "audit:read",
        }
    }

    /// Parses a list separated by spaces and/or commas (`"patients:read appointments:read"`, the
    /// OAuth convention, or `"patients:read,appointments:read"`). Duplicates collapse; an unknown
    /// name fails the whole list, so a typo never silently yields a weaker or stronger key.
    pub fn parse_list(list: &str) -> Result<Vec<ApiScope>, IdentityError> {
        let mut scopes = Vec::new();
        for name in list.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|s| !s.is_empty()) {
            let scope = name.parse::<ApiScope>()?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        scopes.sort();
        Ok(scopes)
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiScope {
    type Err = IdentityError;
    /// Exact, case-sensitive match on the wire name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownApiScope(truncate_for_error(s)))
    }
}

impl Serialize for ApiScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApiScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Error messages echo client input; cap it so an error cannot become a megabyte log line.
fn truncate_for_error(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Whether one API key scope grants a permission.
pub const fn scope_grants(scope: ApiScope, permission: Permission) -> bool {
    use Permission as P;
    matches!(
        (scope, permission),
        (ApiScope::PatientsRead, P::PatientReadContact)
            | (ApiScope::PatientsWrite, P::PatientCreate | P::PatientUpdateContact)
            | (ApiScope::ConsentsRead, P::ConsentRead)
            | (ApiScope::ConsentsWrite, P::ConsentRecord)
            | (ApiScope::AppointmentsRead, P::AppointmentRead)
            | (ApiScope::AppointmentsWrite, P::AppointmentManage)
            | (ApiScope::AuditRead, P::AuditRead | P::AuditVerify)
    )
}

/// The scope an API key holding `scopes` has for `permission`: the whole practice if any of its
/// scopes grants it, otherwise nothing.
pub fn api_key_allowed(scopes: &[ApiScope], permission: Permission) -> Scope {
    if scopes.iter().any(|scope| scope_grants(*scope, permission)) { Scope::Tenant } else { Scope::Denied }
}

/// The matrix as a Markdown document. `crates/identity/PERMISSIONS.md` is this text; a unit test
/// fails when they differ, so the documented matrix cannot drift from the enforced one.
pub fn matrix_markdown() -> String {
    let mut out = String::new();
    out.push_str("<!-- Generated from identity::matrix_markdown(). Do not edit by hand: a unit test fails when this\n");
    out.push_str("     file and the code differ. Regenerate: UPDATE_PERMISSIONS=1 cargo test -p identity -->\n\n");
    out.push_str("# Permission matrix\n\n");
    out.push_str("Who may do what within one practice. Tenant isolation is enforced underneath by Postgres\n");
    out.push_str("row-level security; this matrix is checked by the API before any query runs.\n\n");
    out.push_str("- **practice**: every record of the practice\n");
    out.push_str("- **assigned**: records of patients assigned to the therapist\n");
    out.push_str("- **own**: records the caller is the subject of or takes part in\n");
    out.push_str("- **no**: denied\n\n");
    out.push_str("| Permission | Name |");
    for role in Role::ALL {
        out.push(' ');
        out.push_str(role.as_str());
        out.push_str(" |");
    }
    out.push_str(" API key scope |\n|---|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push_str("---|\n");
    for permission in Permission::ALL {
        out.push_str("| ");
        out.push_str(permission.description());
        out.push_str(" | `");
        out.push_str(permission.as_str());
        out.push_str("` |");
        for role in Role::ALL {
            out.push(' ');
            out.push_str(allowed(role, permission).as_str());
            out.push_str(" |");
        }
        let scopes: Vec<String> = ApiScope::ALL
            .into_iter()
            .filter(|scope| scope_grants(*scope, permission))
            .map(|scope| format!("`{scope}`"))
            .collect();
        out.push(' ');
        out.push_str(if scopes.is_empty() { "no".to_owned() } else { scopes.join(", ") }.as_str());
        out.push_str(" |\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_matrix_matches_code() {
        let generated = matrix_markdown();
        if std::env::var_os("UPDATE_PERMISSIONS").is_some() {
            // The file is embedded at compile time, so this run cannot compare; the next one will.
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/PERMISSIONS.md"), &generated).unwrap();
            return;
        }
        let committed = include_str!("../PERMISSIONS.md");
        assert_eq!(
            committed, generated,
            "PERMISSIONS.md is out of date; run UPDATE_PERMISSIONS=1 cargo test -p identity and review the diff"
        );
    }

    #[test]
    fn admin_holds_everything_practice_wide() {
        for permission in Permission::ALL {
            assert_eq!(allowed(Role::Admin, permission), Scope::Tenant, "{permission}");
        }
    }

    #[test]
    fn receptionist_never_sees_clinical_data() {
        for permission in [Permission::PatientReadClinical, Permission::PatientWriteClinical, Permission::PatientExport]
        {
            assert_eq!(allowed(Role::Receptionist, permission), Scope::Denied, "{permission}");
        }
        assert_eq!(allowed(Role::Receptionist, Permission::PatientReadContact), Scope::Tenant);
        assert_eq!(allowed(Role::Receptionist, Permission::CalendarManage), Scope::Tenant);
        assert_eq!(allowed(Role::Receptionist, Permission::AppointmentManage), Scope::Tenant);
    }

    #[test]
    fn therapist_is_limited_to_assigned_patients() {
        assert_eq!(allowed(Role::Therapist, Permission::PatientReadClinical), Scope::Assigned);
        assert_eq!(allowed(Role::Therapist, Permission::PatientWriteClinical), Scope::Assigned);
        assert_eq!(allowed(Role::Therapist, Permission::AppointmentRead), Scope::Own);
        assert!(!allowed(Role::Therapist, Permission::PatientReadClinical).permits(Relation::SamePractice));
        assert!(allowed(Role::Therapist, Permission::PatientReadClinical).permits(Relation::Assigned));
    }

    #[test]
    fn patient_reaches_only_own_records() {
        for permission in Permission::ALL {
            let scope = allowed(Role::Patient, permission);
            assert!(scope == Scope::Own || scope == Scope::Denied, "{permission}: {scope}");
            assert!(!scope.permits(Relation::SamePractice));
            assert!(!scope.permits(Relation::Assigned));
        }
        assert_eq!(allowed(Role::Patient, Permission::PatientExport), Scope::Own);
        assert_eq!(allowed(Role::Patient, Permission::PatientReadClinical), Scope::Denied);
    }

    #[test]
    fn only_admins_manage_users_keys_audit_and_other_sessions() {
        for permission in [
            Permission::UserManage,
            Permission::ApiKeyManage,
            Permission::AuditRead,
            Permission::AuditVerify,
            Permission::SessionRevokeAny,
            Permission::PatientErase,
        ] {
            for role in [Role::Therapist, Role::Receptionist, Role::Patient] {
                assert_eq!(allowed(role, permission), Scope::Denied, "{role} {permission}");
            }
        }
    }

    #[test]
    fn denied_permits_nothing() {
        for relation in [Relation::Own, Relation::Assigned, Relation::SamePractice] {
            assert!(!Scope::Denied.permits(relation));
            assert!(Scope::Tenant.permits(relation));
        }
        assert!(Scope::Own.permits(Relation::Own));
        assert!(!Scope::Own.permits(Relation::Assigned));
    }

    #[test]
    fn names_round_trip() {
        for permission in Permission::ALL {
            assert_eq!(permission.as_str().parse::<Permission>().unwrap(), permission);
        }
        for scope in ApiScope::ALL {
            assert_eq!(scope.as_str().parse::<ApiScope>().unwrap(), scope);
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(json, format!("\"{}\"", scope.as_str()));
            assert_eq!(serde_json::from_str::<ApiScope>(&json).unwrap(), scope);
        }
        assert!("Patients:Read".parse::<ApiScope>().is_err());
        assert!("patients:*".parse::<ApiScope>().is_err());
        assert!("patient.delete".parse::<Permission>().is_err());
    }

    #[test]
    fn scope_lists_parse_strictly() {
        assert_eq!(
            ApiScope::parse_list("appointments:read, patients:read patients:read").unwrap(),
            vec![ApiScope::PatientsRead, ApiScope::AppointmentsRead]
        );
        assert_eq!(ApiScope::parse_list("").unwrap(), vec![]);
        assert!(ApiScope::parse_list("patients:read patients:admin").is_err());
    }

    #[test]
    fn api_keys_never_reach_clinical_data_or_administration() {
        for permission in [
            Permission::PatientReadClinical,
            Permission::PatientWriteClinical,
            Permission::PatientExport,
            Permission::PatientErase,
            Permission::UserManage,
            Permission::ApiKeyManage,
            Permission::SessionRevokeAny,
        ] {
            assert_eq!(api_key_allowed(&ApiScope::ALL, permission), Scope::Denied, "{permission}");
        }
        assert_eq!(api_key_allowed(&[ApiScope::PatientsRead], Permission::PatientReadContact), Scope::Tenant);
        assert_eq!(api_key_allowed(&[ApiScope::PatientsRead], Permission::PatientUpdateContact), Scope::Denied);
        assert!(scope_grants(ApiScope::AppointmentsWrite, Permission::AppointmentManage));
        assert!(!scope_grants(ApiScope::AppointmentsRead, Permission::AppointmentManage));
    }
}
