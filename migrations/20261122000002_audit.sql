-- The tamper-evident audit trail: per-practice hash-chained entries, the chain heads that
-- serialise appends, and checkpoints. See crates/audit (the chain and its encoding) and
-- crates/store-postgres/src/audit.rs (how rows are written and verified).
--
-- Two lines of defence:
--   1. Privileges and triggers: the runtime role may only INSERT and SELECT entries and
--      checkpoints; a trigger refuses UPDATE, DELETE and TRUNCATE for everyone, the owner
--      included, except the owner's explicit retention purge (below).
--   2. The hash chain and checkpoints, for whoever gets past the first line (a superuser, an
--      owner who disables the trigger, a restored-and-edited backup): verification recomputes
--      every hash and never trusts audit_heads.

-- One row per hashed entry. Every hashed field round-trips bit for bit (crates/audit docs):
-- seq as BIGINT, hashes as BYTEA, occurred_at as timestamptz (already microseconds), the actor
-- in its own columns, the detail as jsonb (the canonical form is recomputed when verifying).
CREATE TABLE audit_entries (
    tenant_id      uuid        NOT NULL,
    seq            bigint      NOT NULL CHECK (seq >= 1),
    prev_hash      bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- The actor: `user` (tenant, user, role), `api_key` (tenant, name = key id),
    -- `system` (name = component), `webhook` (name = provider).
    actor_kind     text        NOT NULL,
    actor_tenant   uuid,
    actor_user     uuid,
    actor_role     text,
    actor_name     text,
    action         text        NOT NULL,
    resource_type  text        NOT NULL,
    resource_id    text,
    outcome        text        NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    request_id     text,
    occurred_at    timestamptz NOT NULL,
    detail         jsonb       NOT NULL CHECK (jsonb_typeof(detail) = 'object'),
    PRIMARY KEY (tenant_id, seq),
    -- Exactly the columns the actor kind uses, so a row decodes to one actor only.
    CONSTRAINT audit_entries_actor_shape CHECK (
        CASE
            WHEN actor_kind = 'user' THEN actor_tenant IS NOT NULL AND actor_user IS NOT NULL
                AND actor_role IS NOT NULL AND actor_name IS NULL
            WHEN actor_kind = 'api_key' THEN actor_tenant IS NOT NULL AND actor_user IS NULL
                AND actor_role IS NULL AND actor_name IS NOT NULL
            WHEN actor_kind IN ('system', 'webhook') THEN actor_tenant IS NULL AND actor_user IS NULL
                AND actor_role IS NULL AND actor_name IS NOT NULL
            ELSE false
        END
    ),
    -- The pure crate refuses an actor of another practice; the schema says so too.
    CONSTRAINT audit_entries_actor_tenant CHECK (actor_tenant IS NULL OR actor_tenant = tenant_id)
);
-- The two questions auditors ask: "who touched this record?" and "what did this user do?".
-- Both end in seq so the newest-first pagination reads the index backwards.
CREATE INDEX audit_entries_resource_idx ON audit_entries (tenant_id, resource_type, resource_id, seq);
CREATE INDEX audit_entries_actor_user_idx ON audit_entries (tenant_id, actor_user, seq) WHERE actor_user IS NOT NULL;

-- The tip of each practice's chain. Not evidence: it is the per-tenant lock appends take
-- (SELECT ... FOR UPDATE) and a pointer that saves reading the newest entry. Verification never
-- reads it, so the runtime role may UPDATE it; a forged head only makes the next append fail
-- (primary key) or leave a gap that verification reports.
CREATE TABLE audit_heads (
    tenant_id  uuid   PRIMARY KEY REFERENCES tenants (id),
    seq        bigint NOT NULL CHECK (seq >= 0),
    hash       bytea  NOT NULL CHECK (octet_length(hash) = 32)
);

-- "At seq N the head hash was H", signed through a CheckpointSigner when one is configured.
-- A checkpoint at the seq just before a tenant's oldest retained entry is also the anchor a
-- retention purge leaves behind (see purge_before in crates/store-postgres/src/audit.rs).
CREATE TABLE audit_checkpoints (
    tenant_id   uuid        NOT NULL,
    seq         bigint      NOT NULL CHECK (seq >= 1),
    head_hash   bytea       NOT NULL CHECK (octet_length(head_hash) = 32),
    created_at  timestamptz NOT NULL,
    signature   bytea,
    -- Two checkpoints of one seq may exist (taken at different times); ordering is by seq.
    PRIMARY KEY (tenant_id, seq, created_at)
);

ALTER TABLE audit_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_entries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_entries
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_checkpoints
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

-- Grants: spelled out after a REVOKE ALL, so a default privilege elsewhere cannot widen them.
REVOKE ALL ON audit_entries, audit_heads, audit_checkpoints FROM PUBLIC, praxis_runtime;
GRANT SELECT, INSERT ON audit_entries TO praxis_runtime;
GRANT SELECT, INSERT ON audit_checkpoints TO praxis_runtime;
-- UPDATE is needed for the head pointer and for SELECT ... FOR UPDATE (the append lock).
GRANT SELECT, INSERT, UPDATE ON audit_heads TO praxis_runtime;

-- Append-only, for the owner too. The one exception is the retention purge: a DELETE (never an
-- UPDATE, never a TRUNCATE) on a table whose trigger was created with the argument 'purgeable',
-- by a role that has the table owner's privileges (the owner, or a superuser, who could disable
-- the trigger anyway), in a transaction that set `praxis.retention_purge` to 'on'. Any role can
-- set a custom setting, hence the ownership check; the runtime role also lacks DELETE entirely.
CREATE FUNCTION audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    purgeable boolean := TG_NARGS > 0 AND TG_ARGV[0] = 'purgeable';
BEGIN
    IF TG_LEVEL = 'ROW' AND TG_OP = 'DELETE' AND purgeable
       AND current_setting('praxis.retention_purge', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit table % is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'entries past their retention period are removed by the audit retention purge only';
END
$$;
REVOKE ALL ON FUNCTION audit_refuse_change() FROM PUBLIC;

CREATE TRIGGER audit_entries_append_only
    BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change('purgeable');
CREATE TRIGGER audit_entries_no_truncate
    BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Checkpoints hold no personal data (a seq and a hash), so retention never needs to remove them.
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
