//! The patient record: its personal fields, which of them are clinical, and validation of what
//! API clients send for them.
//!
//! Pure: no I/O. The API deserialises a request into [`NewPatient`] or [`PatientPatch`] (unknown
//! fields rejected), calls `validate`, and only a validated value ([`PatientData`],
//! [`ValidatedPatch`]) reaches encryption and storage. Every rule lives in one `garde`-validated
//! struct ([`FieldRules`]) shared by creation and update, so the two can never disagree.
//!
//! Every field in [`PatientField`] is personal data and is stored encrypted under the patient's
//! data key; the field's [`PatientField::aad_column`] names it in the ciphertext's AAD, so a value
//! moved to another field or patient does not decrypt.

use serde::{Deserialize, Deserializer};
use std::fmt;
use time::Date;
use time::macros::{date, format_description};
use uuid::Uuid;

/// The personal fields of a patient record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatientField {
    Name,
    Email,
    Phone,
    DateOfBirth,
    Address,
    ClinicalNotes,
}

impl PatientField {
    pub const ALL: [PatientField; 6] = [
        PatientField::Name,
        PatientField::Email,
        PatientField::Phone,
        PatientField::DateOfBirth,
        PatientField::Address,
        PatientField::ClinicalNotes,
    ];

    /// The field's name in the API and in the ciphertext's AAD. Stable: changing it makes every
    /// stored value of the field undecryptable.
    pub const fn aad_column(self) -> &'static str {
        match self {
            PatientField::Name => "name",
            PatientField::Email => "email",
            PatientField::Phone => "phone",
            PatientField::DateOfBirth => "date_of_birth",
            PatientField::Address => "address",
            PatientField::ClinicalNotes => "clinical_notes",
        }
    }

    /// Clinical data needs `patient.read_clinical` / `patient.write_clinical`; everything else
    /// is identity and contact data.
    pub const fn is_clinical(self) -> bool {
        matches!(self, PatientField::ClinicalNotes)
    }
}

/// Longest name, in characters.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest email address, in bytes (RFC 5321 path limit).
pub const EMAIL_MAX_LEN: usize = 254;
/// Longest postal address, in characters (several lines).
pub const ADDRESS_MAX_CHARS: usize = 500;
/// Longest clinical notes, in characters.
pub const CLINICAL_NOTES_MAX_CHARS: usize = 20_000;
/// Earliest accepted date of birth.
pub const EARLIEST_BIRTH_DATE: Date = date!(1900 - 01 - 01);

/// A patient's personal data in clear: what is encrypted on write and comes back on read.
/// `Debug` prints which fields are set, never their values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PatientData {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub date_of_birth: Option<Date>,
    pub address: Option<String>,
    pub clinical_notes: Option<String>,
}

impl PatientData {
    /// The text stored (encrypted) for `field`, if set. Dates are ISO 8601 (`YYYY-MM-DD`).
    pub fn stored_text(&self, field: PatientField) -> Option<String> {
        match field {
            PatientField::Name => Some(self.name.clone()),
            PatientField::Email => self.email.clone(),
            PatientField::Phone => self.phone.clone(),
            PatientField::DateOfBirth => self.date_of_birth.map(format_date),
            PatientField::Address => self.address.clone(),
            PatientField::ClinicalNotes => self.clinical_notes.clone(),
        }
    }

    /// Sets `field` from its stored text (the inverse of [`PatientData::stored_text`]).
    pub fn set_stored_text(&mut self, field: PatientField, text: Option<String>) -> Result<(), StoredValueError> {
        match field {
            PatientField::Name => self.name = text.ok_or(StoredValueError { field })?,
            PatientField::Email => self.email = text,
            PatientField::Phone => self.phone = text,
            PatientField::DateOfBirth => {
                self.date_of_birth = text.map(|t| parse_date(&t).ok_or(StoredValueError { field })).transpose()?;
            }
            PatientField::Address => self.address = text,
            PatientField::ClinicalNotes => self.clinical_notes = text,
        }
        Ok(())
    }
}

impl fmt::Debug for PatientData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientData")
            .field("email_set", &self.email.is_some())
            .field("phone_set", &self.phone.is_some())
            .field("date_of_birth_set", &self.date_of_birth.is_some())
            .field("address_set", &self.address.is_some())
            .field("clinical_notes_set", &self.clinical_notes.is_some())
            .finish_non_exhaustive()
    }
}

/// A stored value that this code cannot have written (e.g. an unparsable date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored value of {} is not valid", field.aad_column())]
pub struct StoredValueError {
    pub field: PatientField,
}

/// `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    date.format(format_description!("[year]-[month]-[day]")).unwrap_or_default()
}

/// Parses `YYYY-MM-DD` strictly.
pub fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
}

/// One field that failed validation: the field's API name and a message for the client. The
/// message never repeats the value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Everything wrong with a request, all at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} field(s) failed validation", errors.len())]
pub struct ValidationErrors {
    pub errors: Vec<FieldError>,
}

impl ValidationErrors {
    fn push(&mut self, field: &str, message: &str) {
        self.errors.push(FieldError { field: field.to_owned(), message: message.to_owned() });
    }

    fn into_result(mut self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            // One message per field (the first rule that failed), fields in name order.
            self.errors.sort_by(|a, b| a.field.cmp(&b.field));
            self.errors.dedup_by(|later, first| later.field == first.field);
            Err(self)
        }
    }
}

/// The field rules, in one place. Creation and update both fill this (with `None` for fields they
/// do not set) and validate it.
#[derive(garde::Validate)]
pub struct FieldRules<'a> {
    #[garde(length(chars, min = 1, max = NAME_MAX_CHARS), custom(single_line))]
    pub name: Option<&'a str>,
    #[garde(email, length(max = EMAIL_MAX_LEN))]
    pub email: Option<&'a str>,
    /// E.164: `+`, a non-zero country code digit, 7 to 15 digits in all.
    #[garde(pattern(r"^\+[1-9][0-9]{6,14}$"))]
    pub phone: Option<&'a str>,
    #[garde(length(chars, min = 1, max = ADDRESS_MAX_CHARS), custom(printable_multiline))]
    pub address: Option<&'a str>,
    #[garde(length(chars, min = 1, max = CLINICAL_NOTES_MAX_CHARS), custom(printable_multiline))]
    pub clinical_notes: Option<&'a str>,
}

impl fmt::Debug for FieldRules<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldRules").finish_non_exhaustive()
    }
}

fn single_line(value: &Option<&str>, _: &()) -> garde::Result {
    match value {
        Some(v) if v.chars().any(char::is_control) => Err(garde::Error::new("must not contain control characters")),
        Some(v) if v.trim().is_empty() => Err(garde::Error::new("must not be blank")),
        _ => Ok(()),
    }
}

fn printable_multiline(value: &Option<&str>, _: &()) -> garde::Result {
    match value {
        Some(v) if v.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') => {
            Err(garde::Error::new("must not contain control characters other than line breaks and tabs"))
        }
        _ => Ok(()),
    }
}

impl FieldRules<'_> {
    fn check(&self, errors: &mut ValidationErrors) {
        if let Err(report) = garde::Validate::validate(self) {
            for (path, error) in report.iter() {
                errors.push(&path.to_string(), error.message());
            }
        }
    }
}

/// Validates a date of birth in `YYYY-MM-DD`: not before 1900, not after `today`.
fn check_birth_date(text: &str, today: Date, errors: &mut ValidationErrors) -> Option<Date> {
    let Some(date) = parse_date(text) else {
        errors.push("date_of_birth", "must be a date as YYYY-MM-DD");
        return None;
    };
    if date > today {
        errors.push("date_of_birth", "must not be in the future");
        None
    } else if date < EARLIEST_BIRTH_DATE {
        errors.push("date_of_birth", "must not be before 1900-01-01");
        None
    } else {
        Some(date)
    }
}

/// Email as stored: trimmed, lower-cased (the blind index normalises the same way).
fn clean_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// `POST /api/v1/patients`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub date_of_birth: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub assigned_therapist_id: Option<Uuid>,
    #[serde(default)]
    pub clinical_notes: Option<String>,
}

impl fmt::Debug for NewPatient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewPatient").field("assigned_therapist_id", &self.assigned_therapist_id).finish_non_exhaustive()
    }
}

/// A validated new patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedNewPatient {
    pub data: PatientData,
    pub assigned_therapist: Option<Uuid>,
}

impl NewPatient {
    /// Checks every field; `today` bounds the date of birth.
    pub fn validate(self, today: Date) -> Result<ValidatedNewPatient, ValidationErrors> {
        let mut errors = ValidationErrors { errors: Vec::new() };
        let email = self.email.as_deref().map(clean_email);
        let name = self.name.trim();
        FieldRules {
            name: Some(name),
            email: email.as_deref(),
            phone: self.phone.as_deref(),
            address: self.address.as_deref(),
            clinical_notes: self.clinical_notes.as_deref(),
        }
        .check(&mut errors);
        let date_of_birth = self.date_of_birth.as_deref().and_then(|d| check_birth_date(d, today, &mut errors));
        let name = name.to_owned();
        errors.into_result()?;
        Ok(ValidatedNewPatient {
            data: PatientData {
                name,
                email,
                phone: self.phone,
                date_of_birth,
                address: self.address,
                clinical_notes: self.clinical_notes,
            },
            assigned_therapist: self.assigned_therapist_id,
        })
    }
}

/// One field of a JSON merge patch: absent (leave as is), `null` (clear), or a value (set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    pub fn as_set(&self) -> Option<&T> {
        match self {
            Patch::Set(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Patch::Absent)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Clear => Patch::Clear,
            Patch::Set(value) => Patch::Set(f(value)),
        }
    }
}

/// Present fields arrive here (serde calls this only for keys in the body): `null` clears.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Patch::Clear, Patch::Set))
    }
}

/// `PATCH /api/v1/patients/{id}` (JSON merge patch semantics).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PatientPatch {
    #[serde(default)]
    pub name: Patch<String>,
    #[serde(default)]
    pub email: Patch<String>,
    #[serde(default)]
    pub phone: Patch<String>,
    #[serde(default)]
    pub date_of_birth: Patch<String>,
    #[serde(default)]
    pub address: Patch<String>,
    #[serde(default)]
    pub assigned_therapist_id: Patch<Uuid>,
    #[serde(default)]
    pub clinical_notes: Patch<String>,
}

impl fmt::Debug for PatientPatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatientPatch").field("fields", &self.present_fields()).finish_non_exhaustive()
    }
}

/// A validated patch: the personal fields it changes (with their new values, `None` = cleared)
/// and the therapist assignment if it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidatedPatch {
    pub name: Option<String>,
    pub email: Patch<String>,
    pub phone: Patch<String>,
    pub date_of_birth: Patch<Date>,
    pub address: Patch<String>,
    pub clinical_notes: Patch<String>,
    pub assigned_therapist: Patch<Uuid>,
}

impl ValidatedPatch {
    /// The personal fields this patch changes.
    pub fn changed_fields(&self) -> Vec<PatientField> {
        let mut fields = Vec::new();
        if self.name.is_some() {
            fields.push(PatientField::Name);
        }
        for (field, absent) in [
            (PatientField::Email, self.email.is_absent()),
            (PatientField::Phone, self.phone.is_absent()),
            (PatientField::DateOfBirth, self.date_of_birth.is_absent()),
            (PatientField::Address, self.address.is_absent()),
            (PatientField::ClinicalNotes, self.clinical_notes.is_absent()),
        ] {
            if !absent {
                fields.push(field);
            }
        }
        fields
    }

    /// Applies the patch to decrypted data.
    pub fn apply(&self, data: &mut PatientData) {
        fn merge<T: Clone>(slot: &mut Option<T>, patch: &Patch<T>) {
            match patch {
                Patch::Absent => {}
                Patch::Clear => *slot = None,
                Patch::Set(value) => *slot = Some(value.clone()),
            }
        }
        if let Some(name) = &self.name {
            data.name.clone_from(name);
        }
        merge(&mut data.email, &self.email);
        merge(&mut data.phone, &self.phone);
        merge(&mut data.date_of_birth, &self.date_of_birth);
        merge(&mut data.address, &self.address);
        merge(&mut data.clinical_notes, &self.clinical_notes);
    }
}

impl PatientPatch {
    fn present_fields(&self) -> Vec<&'static str> {
        let mut present = Vec::new();
        for (name, absent) in [
            ("name", self.name.is_absent()),
            ("email", self.email.is_absent()),
            ("phone", self.phone.is_absent()),
            ("date_of_birth", self.date_of_birth.is_absent()),
            ("address", self.address.is_absent()),
            ("assigned_therapist_id", self.assigned_therapist_id.is_absent()),
            ("clinical_notes", self.clinical_notes.is_absent()),
        ] {
            if !absent {
                present.push(name);
            }
        }
        present
    }

    /// Checks every present field; an empty patch is an error (it would only bump `updated_at`).
    pub fn validate(self, today: Date) -> Result<ValidatedPatch, ValidationErrors> {
        let mut errors = ValidationErrors { errors: Vec::new() };
        if self.present_fields().is_empty() {
            errors.push("body", "must change at least one field");
            return Err(errors);
        }
        let name = match self.name {
            Patch::Absent => None,
            Patch::Clear => {
                errors.push("name", "cannot be removed");
                None
            }
            Patch::Set(name) => Some(name.trim().to_owned()),
        };
        let email = self.email.map(|e| clean_email(&e));
        FieldRules {
            name: name.as_deref(),
            email: email.as_set().map(String::as_str),
            phone: self.phone.as_set().map(String::as_str),
            address: self.address.as_set().map(String::as_str),
            clinical_notes: self.clinical_notes.as_set().map(String::as_str),
        }
        .check(&mut errors);
        let date_of_birth = match self.date_of_birth {
            Patch::Absent => Patch::Absent,
            Patch::Clear => Patch::Clear,
            Patch::Set(text) => match check_birth_date(&text, today, &mut errors) {
                Some(date) => Patch::Set(date),
                None => Patch::Absent,
            },
        };
        errors.into_result()?;
        Ok(ValidatedPatch {
            name,
            email,
            phone: self.phone,
            date_of_birth,
            address: self.address,
            clinical_notes: self.clinical_notes,
            assigned_therapist: self.assigned_therapist_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TODAY: Date = date!(2026 - 11 - 22);

    fn new_patient(json: serde_json::Value) -> Result<ValidatedNewPatient, ValidationErrors> {
        serde_json::from_value::<NewPatient>(json).unwrap().validate(TODAY)
    }

    fn fields_of(errors: &ValidationErrors) -> Vec<&str> {
        errors.errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_complete_patient_validates_and_normalises_email() {
        let valid = new_patient(serde_json::json!({
            "name": "  Ada Lovelace ",
            "email": " Ada@Example.ORG ",
            "phone": "+4915112345678",
            "date_of_birth": "1990-02-28",
            "address": "Street 1\n10115 Berlin",
            "clinical_notes": "Intake\tnotes",
        }))
        .unwrap();
        assert_eq!(valid.data.name, "Ada Lovelace");
        assert_eq!(valid.data.email.as_deref(), Some("ada@example.org"));
        assert_eq!(valid.data.date_of_birth, Some(date!(1990 - 02 - 28)));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let errors = new_patient(serde_json::json!({
            "name": "",
            "email": "not-an-email",
            "phone": "015112345678",
            "date_of_birth": "2027-01-01",
            "address": "a\u{0007}b",
            "clinical_notes": "x".repeat(CLINICAL_NOTES_MAX_CHARS + 1),
        }))
        .unwrap_err();
        assert_eq!(fields_of(&errors), ["address", "clinical_notes", "date_of_birth", "email", "name", "phone"]);
        assert!(errors.errors.iter().all(|e| !e.message.contains("not-an-email")), "values are never echoed");
    }

    #[test]
    fn names_and_dates_have_bounds() {
        assert_eq!(fields_of(&new_patient(serde_json::json!({ "name": "   " })).unwrap_err()), ["name"]);
        assert_eq!(fields_of(&new_patient(serde_json::json!({ "name": "a\nb" })).unwrap_err()), ["name"]);
        let long = "é".repeat(NAME_MAX_CHARS + 1);
        assert_eq!(fields_of(&new_patient(serde_json::json!({ "name": long })).unwrap_err()), ["name"]);
        assert!(new_patient(serde_json::json!({ "name": "é".repeat(NAME_MAX_CHARS) })).is_ok(), "counted in chars");
        for bad in ["1899-12-31", "31.01.1990", "1990-02-30", "1990-2-3"] {
            let errors = new_patient(serde_json::json!({ "name": "A", "date_of_birth": bad })).unwrap_err();
            assert_eq!(fields_of(&errors), ["date_of_birth"], "{bad}");
        }
        assert!(new_patient(serde_json::json!({ "name": "A", "date_of_birth": "2026-11-22" })).is_ok());
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        for good in ["+4915112345678", "+12025550123", "+4930123"] {
            assert!(new_patient(serde_json::json!({ "name": "A", "phone": good })).is_ok(), "{good}");
        }
        for bad in ["+0123456789", "+49 151 1234567", "4915112345678", "+4915112345678901234", "+49123"] {
            assert!(new_patient(serde_json::json!({ "name": "A", "phone": bad })).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_value::<NewPatient>(serde_json::json!({ "name": "A", "ssn": "1" })).is_err());
        assert!(serde_json::from_value::<PatientPatch>(serde_json::json!({ "role": "admin" })).is_err());
    }

    #[test]
    fn patch_distinguishes_absent_null_and_value() {
        let patch: PatientPatch =
            serde_json::from_value(serde_json::json!({ "email": null, "phone": "+4930123456" })).unwrap();
        let valid = patch.validate(TODAY).unwrap();
        assert_eq!(valid.email, Patch::Clear);
        assert_eq!(valid.phone, Patch::Set("+4930123456".into()));
        assert_eq!(valid.address, Patch::Absent);
        assert_eq!(valid.changed_fields(), [PatientField::Email, PatientField::Phone]);

        let mut data = PatientData { name: "A".into(), email: Some("a@b.example".into()), ..PatientData::default() };
        valid.apply(&mut data);
        assert_eq!(data.email, None);
        assert_eq!(data.phone.as_deref(), Some("+4930123456"));
    }

    #[test]
    fn patch_rejects_empty_bodies_removed_names_and_bad_values() {
        let empty: PatientPatch = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(fields_of(&empty.validate(TODAY).unwrap_err()), ["body"]);
        let patch: PatientPatch =
            serde_json::from_value(serde_json::json!({ "name": null, "email": "x", "date_of_birth": "soon" })).unwrap();
        assert_eq!(fields_of(&patch.validate(TODAY).unwrap_err()), ["date_of_birth", "email", "name"]);
    }

    #[test]
    fn stored_text_round_trips_every_field() {
        let data = PatientData {
            name: "A".into(),
            email: Some("a@b.example".into()),
            phone: Some("+4930123456".into()),
            date_of_birth: Some(date!(1980 - 01 - 31)),
            address: Some("Street".into()),
            clinical_notes: Some("Notes".into()),
        };
        let mut back = PatientData::default();
        for field in PatientField::ALL {
            back.set_stored_text(field, data.stored_text(field)).unwrap();
        }
        assert_eq!(back, data);
        assert!(back.set_stored_text(PatientField::DateOfBirth, Some("nope".into())).is_err());
        assert!(back.set_stored_text(PatientField::Name, None).is_err());
    }

    #[test]
    fn debug_output_has_no_values() {
        let data =
            PatientData { name: "Ada Lovelace".into(), email: Some("ada@example.org".into()), ..Default::default() };
        let printed = format!("{data:?}");
        assert!(!printed.contains("Ada") && !printed.contains("example"), "{printed}");
    }

    proptest! {
        /// Validation never panics, and accepted names are always within bounds.
        #[test]
        fn validation_is_total(name in ".{0,260}", phone in ".{0,20}", email in ".{0,80}", dob in ".{0,12}") {
            let input = NewPatient {
                name,
                phone: Some(phone),
                email: Some(email),
                date_of_birth: Some(dob),
                ..NewPatient::default()
            };
            if let Ok(valid) = input.validate(TODAY) {
                let chars = valid.data.name.chars().count();
                prop_assert!((1..=NAME_MAX_CHARS).contains(&chars));
                prop_assert!(!valid.data.name.chars().any(char::is_control));
            }
        }
    }
}
