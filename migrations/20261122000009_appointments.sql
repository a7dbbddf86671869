-- Appointments (crates/scheduling): bookings without double booking, therapists' working hours
-- and absences, the reminder outbox, and the payment state set by verified Stripe events.
--
-- Times are timestamptz (UTC instants); every span is half-open [start, end) like tstzrange's
-- default bounds, so back-to-back appointments touch without overlapping.
--
-- Personal data: none in clear. An appointment links a patient id (pseudonymous once the patient
-- is erased: the tombstone holds nothing) to a therapist and a time. Free text (booking notes,
-- a cancellation note) is AES-256-GCM ciphertext under the *patient's* DEK, AAD (tenant,
-- "appointments", column, appointment id), so erasing the patient (destroying the DEK) shreds it
-- too. Cancellation reasons are a closed set of codes, absences carry no reason at all (a reason
-- such as "sick" would be health data about the therapist).
--
-- Who sees which rows (crates/identity/PERMISSIONS.md: appointment.read/manage, calendar.manage):
--   admin, receptionist, service   every appointment of the practice
--   therapist                      appointments they conduct (therapist_id = the user)
--   patient                        their own appointments (patient_id = current_app_patient_id())
-- Working hours are readable by everyone of the practice (they are the practice's opening hours
-- per therapist); absences only by staff who manage the calendar and by the therapist concerned,
-- never by patients. Booking checks and availability read the calendar with the practice's
-- service context and return only times, never whose appointment or why someone is away.

-- The exclusion constraint needs equality on uuid in a GiST index. btree_gist is a trusted
-- extension (Postgres 13+): the database owner (the migration role) may create it.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE appointments (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    patient_id       uuid NOT NULL REFERENCES patients (id),
    therapist_id     uuid NOT NULL REFERENCES users (id),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('initial_consultation', 'therapy_session', 'follow_up',
                         'group_session', 'video_session')),
    status           text NOT NULL CHECK (status IN ('scheduled', 'confirmed', 'completed', 'cancelled', 'no_show')),
    payment_state    text NOT NULL DEFAULT 'unpaid' CHECK (payment_state IN ('unpaid', 'failed', 'paid', 'refunded')),
    notes_enc        bytea,
    cancel_reason    text CHECK (cancel_reason IN ('patient_request', 'therapist_unavailable', 'practice_closed',
                         'no_longer_needed', 'rescheduled', 'patient_erased', 'other')),
    cancel_note_enc  bytea,
    cancelled_at     timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT appointments_end_after_start CHECK (ends_at > starts_at),
    CONSTRAINT appointments_cancellation_recorded CHECK (
        (status = 'cancelled') = (cancel_reason IS NOT NULL AND cancelled_at IS NOT NULL)),
    CONSTRAINT appointments_cancel_note_only_when_cancelled CHECK (status = 'cancelled' OR cancel_note_enc IS NULL),
    -- No double booking, decided by the database: two active appointments of one therapist can
    -- never overlap, however many requests race. "Active" is scheduling's
    -- AppointmentStatus::is_active; a cancelled or finished appointment frees its slot.
    CONSTRAINT appointments_no_double_booking EXCLUDE USING gist (
        tenant_id WITH =,
        therapist_id WITH =,
        tstzrange(starts_at, ends_at, '[)') WITH &&
    ) WHERE (status IN ('scheduled', 'confirmed'))
);
-- Listings: the practice's calendar, one therapist's, one patient's, in time order.
CREATE INDEX appointments_tenant_start_idx ON appointments (tenant_id, starts_at, id);
CREATE INDEX appointments_therapist_start_idx ON appointments (tenant_id, therapist_id, starts_at, id);
CREATE INDEX appointments_patient_start_idx ON appointments (tenant_id, patient_id, starts_at, id);

ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY appointments_practice ON appointments
    USING (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'service'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'service'));
CREATE POLICY appointments_therapist ON appointments
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()));
CREATE POLICY appointments_patient ON appointments
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'patient'
           AND patient_id = (SELECT current_app_patient_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'patient'
           AND patient_id = (SELECT current_app_patient_id()));

-- Appointments are never deleted (a cancellation is a status); who and for whom never change.
GRANT SELECT, INSERT ON appointments TO praxis_runtime;
GRANT UPDATE (therapist_id, starts_at, ends_at, kind, status, payment_state, notes_enc, cancel_reason,
              cancel_note_enc, cancelled_at, updated_at)
    ON appointments TO praxis_runtime;

-- The rules the API applies, held again by the database:
-- * the status only moves along the edges of scheduling's status machine, and a final
--   appointment (completed, cancelled, no_show) keeps its time, therapist and kind;
-- * a patient may confirm or cancel, never record an outcome;
-- * the payment state changes only through store_postgres::appointments::apply_payment_event,
--   which marks its transaction with app.payment_event (API handlers never set it).
CREATE FUNCTION appointments_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payment_state IS DISTINCT FROM OLD.payment_state
       AND current_setting('app.payment_event', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'appointments: the payment state changes only through a verified payment event'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status IN ('completed', 'cancelled', 'no_show')
       AND (NEW.status, NEW.starts_at, NEW.ends_at, NEW.therapist_id, NEW.kind)
           IS DISTINCT FROM (OLD.status, OLD.starts_at, OLD.ends_at, OLD.therapist_id, OLD.kind) THEN
        RAISE EXCEPTION 'appointments: a % appointment cannot change', OLD.status USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'scheduled' AND NEW.status IN ('confirmed', 'cancelled', 'completed', 'no_show'))
        OR (OLD.status = 'confirmed' AND NEW.status IN ('completed', 'cancelled', 'no_show'))) THEN
        RAISE EXCEPTION 'appointments: % -> % is not a status transition', OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND current_app_role() = 'patient'
       AND NEW.status NOT IN ('confirmed', 'cancelled') THEN
        RAISE EXCEPTION 'appointments: a patient may only confirm or cancel' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER appointments_guard_update BEFORE UPDATE ON appointments
    FOR EACH ROW EXECUTE FUNCTION appointments_guard_update();

-- The reminder outbox: rows planned with the appointment (scheduling::plan_reminders), decided
-- by the reminder worker when due (scheduling::decide_reminder, consent checked then). A move or
-- a cancellation marks pending rows skipped; a move plans new ones. Delivery is at least once:
-- a worker claims due rows (FOR UPDATE SKIP LOCKED, then a lease in locked_until), sends with the
-- row's id as idempotency key, and records the outcome; a worker that dies mid-send leaves the
-- row to be claimed again when its lease ends. No personal data: ids, times, channel names,
-- reason and error codes.
CREATE TABLE appointment_reminders (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    appointment_id  uuid NOT NULL REFERENCES appointments (id),
    due_at          timestamptz NOT NULL,
    -- The appointment's start this reminder was planned for: a move makes it stale.
    planned_start   timestamptz NOT NULL,
    offset_minutes  integer NOT NULL CHECK (offset_minutes > 0),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'skipped', 'failed')),
    skip_reason     text CHECK (skip_reason IN ('no_consent', 'appointment_cancelled', 'appointment_moved',
                        'patient_erased', 'no_contact_channel', 'too_late')),
    channel         text CHECK (channel IN ('whatsapp', 'sms', 'email')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    locked_until    timestamptz,
    -- A short machine-readable code of the last delivery failure (never provider text).
    last_error      text CHECK (length(last_error) BETWEEN 1 AND 64),
    decided_at      timestamptz,
    created_at      timestamptz NOT NULL,
    CONSTRAINT appointment_reminders_skip_has_reason CHECK ((status = 'skipped') = (skip_reason IS NOT NULL)),
    CONSTRAINT appointment_reminders_sent_has_channel CHECK (status <> 'sent' OR channel IS NOT NULL),
    CONSTRAINT appointment_reminders_decided CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX appointment_reminders_due_idx ON appointment_reminders (due_at) WHERE status = 'pending';
CREATE INDEX appointment_reminders_tenant_due_idx ON appointment_reminders (tenant_id, due_at)
    WHERE status = 'pending';
CREATE INDEX appointment_reminders_appointment_idx ON appointment_reminders (tenant_id, appointment_id);

-- Reminders follow the visibility of their appointment (like consents follow their patient).
ALTER TABLE appointment_reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointment_reminders FORCE ROW LEVEL SECURITY;
CREATE POLICY appointment_reminders_by_appointment ON appointment_reminders
    USING (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM appointments a WHERE a.id = appointment_id))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND EXISTS (SELECT 1 FROM appointments a WHERE a.id = appointment_id));
-- The worker has to find which practices have due reminders before it can act for any of them.
-- It asks reminders_due_practices() below, which runs as the owner; this policy lets exactly
-- that (any role outside praxis_runtime, like tenants_operator_list) read the outbox across
-- practices. The runtime role itself learns practice ids with due work and nothing else.
CREATE POLICY appointment_reminders_due_scan ON appointment_reminders FOR SELECT
    USING (NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));

GRANT SELECT, INSERT ON appointment_reminders TO praxis_runtime;
GRANT UPDATE (status, skip_reason, channel, attempts, locked_until, last_error, decided_at)
    ON appointment_reminders TO praxis_runtime;

-- Practices with reminders due by `due_by` and not leased to a worker, most overdue first.
CREATE FUNCTION reminders_due_practices(due_by timestamptz, max_practices integer)
    RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$ SELECT r.tenant_id FROM public.appointment_reminders r
          WHERE r.status = 'pending' AND r.due_at <= due_by
            AND (r.locked_until IS NULL OR r.locked_until <= due_by)
          GROUP BY r.tenant_id ORDER BY min(r.due_at) LIMIT max_practices $$;
REVOKE ALL ON FUNCTION reminders_due_practices(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminders_due_practices(timestamptz, integer) TO praxis_runtime;

-- Weekly working hours per therapist: an IANA time zone and wall-clock ranges per weekday
-- (scheduling::WeeklyHours), as [{"weekday": "monday", "start": "09:00", "end": "12:00"}, ...].
CREATE TABLE working_hours (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    therapist_id  uuid NOT NULL REFERENCES users (id),
    time_zone     text NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
    ranges        jsonb NOT NULL CHECK (jsonb_typeof(ranges) = 'array'),
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, therapist_id)
);
ALTER TABLE working_hours ENABLE ROW LEVEL SECURITY;
ALTER TABLE working_hours FORCE ROW LEVEL SECURITY;
CREATE POLICY working_hours_read ON working_hours FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'therapist', 'patient', 'service'));
CREATE POLICY working_hours_practice ON working_hours
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) IN ('admin', 'receptionist'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) IN ('admin', 'receptionist'));
CREATE POLICY working_hours_own ON working_hours
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()));
GRANT SELECT, INSERT ON working_hours TO praxis_runtime;
GRANT UPDATE (time_zone, ranges, updated_at) ON working_hours TO praxis_runtime;

-- Times a therapist is away. No reason column, on purpose (see the top of this file).
CREATE TABLE therapist_absences (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    therapist_id  uuid NOT NULL REFERENCES users (id),
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    CONSTRAINT therapist_absences_end_after_start CHECK (ends_at > starts_at)
);
CREATE INDEX therapist_absences_therapist_idx ON therapist_absences (tenant_id, therapist_id, starts_at);
ALTER TABLE therapist_absences ENABLE ROW LEVEL SECURITY;
ALTER TABLE therapist_absences FORCE ROW LEVEL SECURITY;
-- The service context reads them for booking checks and availability (which reveal no dates).
CREATE POLICY therapist_absences_read ON therapist_absences FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('admin', 'receptionist', 'service'));
CREATE POLICY therapist_absences_practice ON therapist_absences
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) IN ('admin', 'receptionist'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) IN ('admin', 'receptionist'));
CREATE POLICY therapist_absences_own ON therapist_absences
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'therapist'
           AND therapist_id = (SELECT current_app_user_id()));
GRANT SELECT, INSERT, DELETE ON therapist_absences TO praxis_runtime;
