-- Foundation: the runtime role, the RLS context helpers, practices (tenants) and users.
--
-- Runs as the owner role (the one that owns every table). The server connects as a login role
-- that is a member of praxis_runtime: not a superuser, not an owner, no BYPASSRLS. Every table
-- below FORCEs row-level security, so even the owner sees only what the context allows.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'praxis_runtime') THEN
        -- NOLOGIN group role: deployments create their own login role and GRANT this to it.
        CREATE ROLE praxis_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO praxis_runtime;

-- The request context, set per transaction by store_postgres::begin with set_config(..., true).
-- An unset or empty setting reads as NULL, and NULL matches no row.
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE FUNCTION current_app_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

CREATE FUNCTION current_app_role() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.role', true), '') $$;

REVOKE ALL ON FUNCTION current_tenant_id(), current_app_user_id(), current_app_role() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION current_tenant_id(), current_app_user_id(), current_app_role() TO praxis_runtime;

-- Practices. A practice sees only its own row.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
-- `(SELECT f())` makes Postgres evaluate the context once per query (an InitPlan), not per row.
CREATE POLICY tenant_isolation ON tenants
    USING (id = (SELECT current_tenant_id()))
    WITH CHECK (id = (SELECT current_tenant_id()));

GRANT SELECT, INSERT, UPDATE ON tenants TO praxis_runtime;

-- Staff and patient accounts of a practice.
CREATE TABLE users (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    email          text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    role           text NOT NULL CHECK (role IN ('admin', 'therapist', 'receptionist', 'patient')),
    password_hash  text NOT NULL,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);
CREATE INDEX users_tenant_id_idx ON users (tenant_id);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

GRANT SELECT, INSERT, UPDATE ON users TO praxis_runtime;
