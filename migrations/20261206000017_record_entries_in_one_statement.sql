-- A batch of read audit entries recorded in one statement (docs/architecture.md, "Reads are
-- recorded by group commit").
--
-- Until now a batch of reads' entries was a transaction of three round trips: BEGIN with the
-- first practice's RLS context, one INSERT per practice (switching the context between them), and
-- COMMIT. On the `patient_read` bench's machine a round trip and a statement's start-up cost more
-- than the rows themselves (docs/architecture.md, "Where a read's time goes"), and this was paid
-- for every batch of about two reads.
--
-- This function is those INSERTs with their contexts. Sent as the only statement of an implicit
-- transaction (the extended protocol's Sync commits it, before Postgres answers), it records a
-- batch in one round trip. For each practice of the batch, in order of first appearance, it sets
-- that practice's context exactly as store_postgres::begin sets a practice's (tenant set; user,
-- role, token and login email empty) and inserts that practice's entries, in order, under it.
-- It is SECURITY INVOKER: it runs as the caller, so row-level security checks every row against
-- the context it set, as for any INSERT of the runtime role, and it can do nothing the caller
-- could not do with set_config and INSERT itself. The context it found is restored before it
-- returns, so a caller inside an explicit transaction keeps its own.
--
-- No statement timeout covers it (Postgres arms that timer when a statement starts, and the
-- transaction-local setting store_postgres::begin makes has no transaction to live in here), so
-- it sets lock_timeout, which is read when a lock wait starts, to the caller's bound: the one wait
-- an INSERT of audit_entries can have is its foreign key's share lock on the practice's row.
CREATE FUNCTION audit_record_unsealed(
    lock_timeout text,
    entry_tenant uuid[], digest bytea[], actor_kind text[], actor_tenant uuid[], actor_user uuid[],
    actor_role text[], actor_name text[], action text[], resource_type text[], resource_id text[],
    outcome text[], request_id text[], occurred_at timestamptz[], detail jsonb[])
    RETURNS SETOF bigint
    LANGUAGE plpgsql SECURITY INVOKER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    practice uuid;
    found_tenant text := current_setting('app.tenant_id', true);
    found_user text := current_setting('app.user_id', true);
    found_role text := current_setting('app.role', true);
    found_token_hash text := current_setting('app.token_hash', true);
    found_login_email text := current_setting('app.login_email', true);
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    FOR practice IN
        SELECT e.tenant FROM unnest(entry_tenant) WITH ORDINALITY AS e(tenant, position)
        GROUP BY e.tenant ORDER BY min(e.position)
    LOOP
        PERFORM set_config('app.tenant_id', practice::text, true), set_config('app.user_id', '', true),
                set_config('app.role', '', true), set_config('app.token_hash', '', true),
                set_config('app.login_email', '', true);
        RETURN QUERY
            INSERT INTO public.audit_entries (tenant_id, digest, actor_kind, actor_tenant, actor_user, actor_role,
                                              actor_name, action, resource_type, resource_id, outcome, request_id,
                                              occurred_at, detail)
            SELECT practice, e.digest, e.actor_kind, e.actor_tenant, e.actor_user, e.actor_role, e.actor_name,
                   e.action, e.resource_type, e.resource_id, e.outcome, e.request_id, e.occurred_at, e.detail
            FROM unnest(entry_tenant, digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name, action,
                        resource_type, resource_id, outcome, request_id, occurred_at, detail)
                 WITH ORDINALITY AS e(tenant, digest, actor_kind, actor_tenant, actor_user, actor_role, actor_name,
                                      action, resource_type, resource_id, outcome, request_id, occurred_at, detail,
                                      position)
            WHERE e.tenant = practice
            ORDER BY e.position
            RETURNING id;
    END LOOP;
    PERFORM set_config('app.tenant_id', coalesce(found_tenant, ''), true),
            set_config('app.user_id', coalesce(found_user, ''), true),
            set_config('app.role', coalesce(found_role, ''), true),
            set_config('app.token_hash', coalesce(found_token_hash, ''), true),
            set_config('app.login_email', coalesce(found_login_email, ''), true);
END
$$;
REVOKE ALL ON FUNCTION audit_record_unsealed(text, uuid[], bytea[], text[], uuid[], uuid[], text[], text[], text[],
                                             text[], text[], text[], text[], timestamptz[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_record_unsealed(text, uuid[], bytea[], text[], uuid[], uuid[], text[], text[], text[],
                                                text[], text[], text[], text[], timestamptz[], jsonb[]) TO praxis_runtime;
