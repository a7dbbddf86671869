-- One patient read in one statement (docs/architecture.md, "Where a read's time goes").
--
-- Until now a patient read was a transaction of its own: `BEGIN READ ONLY` with the caller's RLS
-- context (a simple query, parsed and planned each time), the SELECT, and the ROLLBACK sent with
-- the handshake sqlx makes when the connection returns to its pool. Under the `patient_read`
-- bench's load a round trip and a statement's start-up cost more than the row itself.
--
-- This function is that SELECT with its context. Sent as the only statement of an implicit
-- transaction (store_postgres::patients::get_in_one_statement), it reads a patient in one round
-- trip, its plan prepared once per connection. It sets the caller's context exactly as
-- store_postgres::begin sets it (the same five settings, the same values), runs the SELECT of
-- store_postgres::patients::get under it, and restores the context it found before it returns,
-- so a caller inside an explicit transaction keeps its own (and one outside has none left: the
-- settings are transaction-local, and its transaction ends with the statement). Its columns are
-- those of store_postgres::patients::select_columns: a column added there needs a new version of
-- this function.
--
-- It is SECURITY INVOKER: it runs as the caller, so row-level security filters patients and
-- patient_keys against the context it set, as for any SELECT of the runtime role, and it can do
-- nothing the caller could not do with set_config and SELECT itself. It is STABLE, so PL/pgSQL
-- refuses any write in its body: it reads and cannot be made to write.
--
-- No statement timeout covers it (Postgres arms that timer when a statement starts, and the
-- transaction-local setting store_postgres::begin makes has no transaction to live in here). It
-- sets lock_timeout, read when a lock wait starts, to the caller's bound instead: the one wait a
-- primary-key read can have is for its relations' share locks, behind a schema change.
CREATE FUNCTION patient_read(
    lock_timeout text, context_tenant text, context_user text, context_role text, context_token_hash text,
    context_login_email text, read_tenant uuid, read_id uuid)
    RETURNS TABLE (id uuid, tenant_id uuid, dek_generation integer, assigned_therapist_id uuid, name_enc bytea,
                   email_enc bytea, phone_enc bytea, date_of_birth_enc bytea, address_enc bytea,
                   clinical_notes_enc bytea, legal_hold boolean, created_at timestamptz, updated_at timestamptz,
                   erased_at timestamptz, kek_id text, kek_version text, wrapped_dek bytea)
    LANGUAGE plpgsql STABLE SECURITY INVOKER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    found_lock_timeout text := current_setting('lock_timeout');
    found_tenant text := current_setting('app.tenant_id', true);
    found_user text := current_setting('app.user_id', true);
    found_role text := current_setting('app.role', true);
    found_token_hash text := current_setting('app.token_hash', true);
    found_login_email text := current_setting('app.login_email', true);
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true),
            set_config('app.tenant_id', context_tenant, true), set_config('app.user_id', context_user, true),
            set_config('app.role', context_role, true), set_config('app.token_hash', context_token_hash, true),
            set_config('app.login_email', context_login_email, true);
    RETURN QUERY
        SELECT p.id, p.tenant_id, p.dek_generation, p.assigned_therapist_id, p.name_enc, p.email_enc, p.phone_enc,
               p.date_of_birth_enc, p.address_enc, p.clinical_notes_enc, p.legal_hold, p.created_at, p.updated_at,
               p.erased_at, k.kek_id, k.kek_version, k.wrapped_dek
        FROM public.patients p LEFT JOIN public.patient_keys k
             ON k.tenant_id = p.tenant_id AND k.patient_id = p.id AND k.generation = p.dek_generation
             AND k.destroyed_at IS NULL
        WHERE p.tenant_id = read_tenant AND p.id = read_id;
    PERFORM set_config('lock_timeout', found_lock_timeout, true),
            set_config('app.tenant_id', coalesce(found_tenant, ''), true),
            set_config('app.user_id', coalesce(found_user, ''), true),
            set_config('app.role', coalesce(found_role, ''), true),
            set_config('app.token_hash', coalesce(found_token_hash, ''), true),
            set_config('app.login_email', coalesce(found_login_email, ''), true);
END
$$;
REVOKE ALL ON FUNCTION patient_read(text, text, text, text, text, text, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION patient_read(text, text, text, text, text, text, uuid, uuid) TO praxis_runtime;
