-- Patients, their consents per purpose, and the links from users and keys to them.
--
-- Personal data is never stored in clear: every personal field is an AES-256-GCM ciphertext
-- (crypto crate, format v1) under the patient's DEK, bound by its AAD to (tenant, "patients",
-- column, patient id). Equality search on email and phone goes through blind indexes (HMAC under
-- the practice's blind-index key, see tenant_keys). `dek_generation` names the patient_keys row
-- whose DEK sealed the fields.
--
-- Erasure (GDPR Art. 17) destroys the patient's DEKs (patient_keys.destroyed_at) and tombstones
-- the row: every ciphertext and blind index is emptied, `erased_at` is set; the id, the practice,
-- the creation and erasure times stay, with no personal data.
--
-- Who sees which rows (the same rules the API checks first, see crates/identity/PERMISSIONS.md):
--   admin, receptionist   every patient of the practice
--   therapist             patients assigned to them
--   patient               their own record only (users.patient_id of the signed-in user)
--   service               API keys and verified webhooks (app.role = 'service'); the API checks
--                         the key's scopes before any query
-- Column-level minimisation (a receptionist never gets clinical notes) is done by the API,
-- which does not decrypt what the caller may not see.

CREATE TABLE patients (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL REFERENCES tenants (id),
    dek_generation         integer NOT NULL CHECK (dek_generation >= 1),
    assigned_therapist_id  uuid REFERENCES users (id),
    name_enc               bytea,
    email_enc              bytea,
    phone_enc              bytea,
    date_of_birth_enc      bytea,
    address_enc            bytea,
    clinical_notes_enc     bytea,
    email_index            bytea CHECK (octet_length(email_index) = 32),
    phone_index            bytea CHECK (octet_length(phone_index) = 32),
    legal_hold             boolean NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    erased_at              timestamptz,
    -- A live record has a name; an erased one has no personal data left at all.
    CONSTRAINT patients_live_has_name CHECK (erased_at IS NOT NULL OR name_enc IS NOT NULL),
    CONSTRAINT patients_erased_is_empty CHECK (
        erased_at IS NULL OR (name_enc IS NULL AND email_enc IS NULL AND phone_enc IS NULL
            AND date_of_birth_enc IS NULL AND address_enc IS NULL AND clinical_notes_enc IS NULL
            AND email_index IS NULL AND phone_index IS NULL AND assigned_therapist_id IS NULL)
    ),
    CONSTRAINT patients_no_hold_after_erasure CHECK (erased_at IS NULL OR NOT legal_hold)
);
-- Keyset pagination per practice (ids are UUIDv7: time-ordered) and the policy columns.
CREATE INDEX patients_tenant_id_idx ON patients (tenant_id, id);
CREATE INDEX patients_therapist_idx ON patients (tenant_id, assigned_therapist_id, id);
CREATE INDEX patients_email_index_idx ON patients (tenant_id, email_index) WHERE email_index IS NOT NULL;
CREATE INDEX patients_phone_index_idx ON patients (tenant_id, phone_index) WHERE phone_index IS NOT NULL;

-- The patient a signed-in patient user is: read from their own users row (users_self_read),
-- never from a setting the application could get wrong.
CREATE FUNCTION current_app_patient_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT u.patient_id FROM users u
          WHERE u.id = current_app_user_id() AND u.tenant_id = current_tenant_id() AND u.role = 'patient' $$;
REVOKE ALL ON FUNCTION current_app_patient_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION current_app_patient_id() TO praxis_runtime;

ALTER TABLE patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE patients FORCE ROW LEVEL SECURITY;
CREATE POLICY patients_practice ON patients
    USING (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'service'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'service'));
CREATE POLICY patients_assigned ON patients
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND assigned_therapist_id = (SELECT current_app_user_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND assigned_therapist_id = (SELECT current_app_user_id()));
CREATE POLICY patients_self ON patients
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'patient'
           AND id = (SELECT current_app_patient_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'patient'
           AND id = (SELECT current_app_patient_id()));

-- API keys and webhooks ('service') may check that a therapist they assign exists, like staff.
CREATE POLICY users_service_read ON users FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'service'
           AND role <> 'patient');

-- Rows are never deleted (erasure tombstones them). Identity columns are immutable.
GRANT SELECT, INSERT ON patients TO praxis_runtime;
GRANT UPDATE (dek_generation, assigned_therapist_id, name_enc, email_enc, phone_enc, date_of_birth_enc,
              address_enc, clinical_notes_enc, email_index, phone_index, legal_hold, updated_at, erased_at)
    ON patients TO praxis_runtime;

CREATE FUNCTION patients_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.erased_at IS NOT NULL THEN
        RAISE EXCEPTION 'patients: an erased record cannot change' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.erased_at IS NOT NULL AND OLD.legal_hold THEN
        RAISE EXCEPTION 'patients: erasure refused while a legal hold is set' USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.legal_hold IS DISTINCT FROM OLD.legal_hold AND current_app_role() IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'patients: only an admin may set or lift a legal hold' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.assigned_therapist_id IS DISTINCT FROM OLD.assigned_therapist_id
       AND current_app_role() NOT IN ('admin', 'receptionist') THEN
        RAISE EXCEPTION 'patients: only an admin or receptionist may assign a therapist'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER patients_guard_update BEFORE UPDATE ON patients FOR EACH ROW EXECUTE FUNCTION patients_guard_update();

-- The users linked to a patient now point at real patients. (patient_keys keeps no foreign key:
-- its rows are written only together with their patient or by the key tooling, and the key
-- tooling is tested over key rows alone.)
ALTER TABLE users ADD CONSTRAINT users_patient_fk FOREIGN KEY (patient_id) REFERENCES patients (id);
CREATE UNIQUE INDEX users_one_account_per_patient ON users (tenant_id, patient_id) WHERE patient_id IS NOT NULL;

-- Consent per patient and purpose (crates/consent): the append-only history of every change with
-- its evidence, and the current state per patient and purpose derived from it (for queries such
-- as "whom may we remind"). Neither holds personal data: ids, purposes, states, times, the consent
-- text's version and SHA-256, the channel, who recorded it, a reference to the proof.
-- `expired` is never stored: a grant whose expires_at has passed is expired by time alone
-- (state = 'granted' AND expires_at <= now()).
CREATE TABLE consent_events (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    patient_id     uuid NOT NULL REFERENCES patients (id),
    purpose        text NOT NULL CHECK (purpose IN ('data_processing', 'marketing_whatsapp', 'marketing_email',
                       'marketing_sms', 'appointment_reminders', 'treatment_updates', 'third_party_sharing')),
    -- Position in the history of this patient and purpose: the unique key makes two concurrent
    -- changes computed from the same history collide instead of both landing.
    seq            bigint NOT NULL CHECK (seq >= 1),
    action         text NOT NULL CHECK (action IN ('request', 'grant', 'withdraw', 'archive')),
    state_before   text NOT NULL CHECK (state_before IN ('none', 'requested', 'granted', 'expired', 'withdrawn', 'archived')),
    state_after    text NOT NULL CHECK (state_after IN ('requested', 'granted', 'withdrawn', 'archived')),
    text_version   text NOT NULL CHECK (length(text_version) BETWEEN 1 AND 64),
    text_sha256    bytea NOT NULL CHECK (octet_length(text_sha256) = 32),
    channel        text NOT NULL CHECK (channel IN ('web', 'paper', 'whatsapp', 'sms', 'email', 'phone')),
    recorded_by    jsonb NOT NULL CHECK (jsonb_typeof(recorded_by) = 'object'),
    recorded_at    timestamptz NOT NULL,
    expires_at     timestamptz,
    evidence_ref   text CHECK (length(evidence_ref) BETWEEN 1 AND 256),
    UNIQUE (tenant_id, patient_id, purpose, seq)
);
CREATE INDEX consent_events_patient_idx ON consent_events (tenant_id, patient_id, purpose, seq);

CREATE TABLE consents (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    patient_id     uuid NOT NULL REFERENCES patients (id),
    purpose        text NOT NULL,
    state          text NOT NULL CHECK (state IN ('requested', 'granted', 'withdrawn', 'archived')),
    version        bigint NOT NULL CHECK (version >= 1),
    expires_at     timestamptz,
    changed_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, patient_id, purpose)
);

-- Consents follow the visibility of their patient: a policy that reads `patients` is itself
-- filtered by the patients policies, so whoever cannot see the patient cannot see the consents.
ALTER TABLE consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE consents FORCE ROW LEVEL SECURITY;
CREATE POLICY consents_by_patient ON consents
    USING (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM patients p WHERE p.id = patient_id))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM patients p WHERE p.id = patient_id));
ALTER TABLE consent_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE consent_events FORCE ROW LEVEL SECURITY;
CREATE POLICY consent_events_by_patient ON consent_events
    USING (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM patients p WHERE p.id = patient_id))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM patients p WHERE p.id = patient_id));

GRANT SELECT, INSERT ON consents, consent_events TO praxis_runtime;
GRANT UPDATE (state, version, expires_at, changed_at) ON consents TO praxis_runtime;

-- History is evidence: nobody edits or removes it, the owner included.
CREATE FUNCTION consent_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent_events is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION consent_events_append_only();
CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION consent_events_append_only();
