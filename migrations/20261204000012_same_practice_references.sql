-- Every reference between practice-owned tables names the practice too, so it can only point at a
-- row of the same practice: by construction, not by a policy that could be forgotten.
--
-- Before, the foreign keys were single-column (`appointments.patient_id REFERENCES patients (id)`),
-- and row-level security checks only the row being written, not the row it references. Under
-- practice A's context the runtime role could therefore book an appointment for practice B's
-- patient with B's therapist, or assign B's therapist to A's patient; and the foreign key's answer
-- (accepted vs. violation) told whether an id existed in another practice. Now each reference is
-- the pair (tenant_id, id), whose target must carry the referencing row's own tenant_id: a
-- reference to another practice's row fails exactly like a reference to no row at all.
--
-- Not covered, on purpose: `patient_keys.patient_id` has no foreign key (keys are stored before
-- their patient row in the same transaction, and re-encryption writes new generations); the row is
-- bound to its practice by its own `tenant_id` and row-level security.

-- The targets: (tenant_id, id) is unique because id alone is.
ALTER TABLE users ADD CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE patients ADD CONSTRAINT patients_tenant_id_id_key UNIQUE (tenant_id, id);
ALTER TABLE appointments ADD CONSTRAINT appointments_tenant_id_id_key UNIQUE (tenant_id, id);

-- Existing data must already be consistent; if it is not, stop here and say where, rather than
-- keep a cross-practice reference (the operator decides what it was).
DO $$
DECLARE
    crossing bigint;
BEGIN
    SELECT (SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.tenant_id <> s.tenant_id)
         + (SELECT count(*) FROM api_keys k JOIN users u ON u.id = k.created_by WHERE u.tenant_id <> k.tenant_id)
         + (SELECT count(*) FROM users x JOIN patients p ON p.id = x.patient_id WHERE p.tenant_id <> x.tenant_id)
         + (SELECT count(*) FROM patients p JOIN users u ON u.id = p.assigned_therapist_id WHERE u.tenant_id <> p.tenant_id)
         + (SELECT count(*) FROM consent_events e JOIN patients p ON p.id = e.patient_id WHERE p.tenant_id <> e.tenant_id)
         + (SELECT count(*) FROM consents c JOIN patients p ON p.id = c.patient_id WHERE p.tenant_id <> c.tenant_id)
         + (SELECT count(*) FROM appointments a JOIN patients p ON p.id = a.patient_id WHERE p.tenant_id <> a.tenant_id)
         + (SELECT count(*) FROM appointments a JOIN users u ON u.id = a.therapist_id WHERE u.tenant_id <> a.tenant_id)
         + (SELECT count(*) FROM appointment_reminders r JOIN appointments a ON a.id = r.appointment_id WHERE a.tenant_id <> r.tenant_id)
         + (SELECT count(*) FROM working_hours w JOIN users u ON u.id = w.therapist_id WHERE u.tenant_id <> w.tenant_id)
         + (SELECT count(*) FROM therapist_absences t JOIN users u ON u.id = t.therapist_id WHERE u.tenant_id <> t.tenant_id)
         + (SELECT count(*) FROM webhook_messages m JOIN patients p ON p.id = m.patient_id WHERE p.tenant_id <> m.tenant_id)
      INTO crossing;
    IF crossing > 0 THEN
        RAISE EXCEPTION '% row(s) reference a row of another practice; resolve them before this migration', crossing
            USING HINT = 'see migrations/20261204000012_same_practice_references.sql for the query per table';
    END IF;
END
$$;

ALTER TABLE sessions DROP CONSTRAINT sessions_user_id_fkey,
    ADD CONSTRAINT sessions_user_fk FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_created_by_fkey,
    ADD CONSTRAINT api_keys_created_by_fk FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id);
ALTER TABLE users DROP CONSTRAINT users_patient_fk,
    ADD CONSTRAINT users_patient_fk FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE patients DROP CONSTRAINT patients_assigned_therapist_id_fkey,
    ADD CONSTRAINT patients_assigned_therapist_fk FOREIGN KEY (tenant_id, assigned_therapist_id)
        REFERENCES users (tenant_id, id);
ALTER TABLE consent_events DROP CONSTRAINT consent_events_patient_id_fkey,
    ADD CONSTRAINT consent_events_patient_fk FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE consents DROP CONSTRAINT consents_patient_id_fkey,
    ADD CONSTRAINT consents_patient_fk FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE appointments DROP CONSTRAINT appointments_patient_id_fkey,
    ADD CONSTRAINT appointments_patient_fk FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
ALTER TABLE appointments DROP CONSTRAINT appointments_therapist_id_fkey,
    ADD CONSTRAINT appointments_therapist_fk FOREIGN KEY (tenant_id, therapist_id) REFERENCES users (tenant_id, id);
ALTER TABLE appointment_reminders DROP CONSTRAINT appointment_reminders_appointment_id_fkey,
    ADD CONSTRAINT appointment_reminders_appointment_fk FOREIGN KEY (tenant_id, appointment_id)
        REFERENCES appointments (tenant_id, id);
ALTER TABLE working_hours DROP CONSTRAINT working_hours_therapist_id_fkey,
    ADD CONSTRAINT working_hours_therapist_fk FOREIGN KEY (tenant_id, therapist_id) REFERENCES users (tenant_id, id);
ALTER TABLE therapist_absences DROP CONSTRAINT therapist_absences_therapist_id_fkey,
    ADD CONSTRAINT therapist_absences_therapist_fk FOREIGN KEY (tenant_id, therapist_id) REFERENCES users (tenant_id, id);
ALTER TABLE webhook_messages DROP CONSTRAINT webhook_messages_patient_id_fkey,
    ADD CONSTRAINT webhook_messages_patient_fk FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id);
