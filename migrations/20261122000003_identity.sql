-- Identity: users' role-aware policies, sessions and API keys.
--
-- The RLS context now has three parts, all transaction-local (set by store_postgres):
--   app.tenant_id, app.user_id, app.role  - who is acting;
--   app.token_hash                        - during authentication only: the SHA-256 of the
--                                           presented session token or API key (hex), so the
--                                           lookup can see exactly the one row it names;
--   app.login_email                       - during login only: the email being logged in.
-- Authentication therefore never needs a context that sees a whole practice.

CREATE FUNCTION current_token_hash() RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT decode(nullif(current_setting('app.token_hash', true), ''), 'hex') $$;

CREATE FUNCTION current_login_email() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.login_email', true), '') $$;

REVOKE ALL ON FUNCTION current_token_hash(), current_login_email() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION current_token_hash(), current_login_email() TO praxis_runtime;

-- Users -------------------------------------------------------------------------------------

ALTER TABLE users ADD COLUMN password_changed_at timestamptz;
ALTER TABLE users ADD COLUMN last_login_at timestamptz;
-- A patient's login is linked to their patient record (the FK arrives with the patients table).
ALTER TABLE users ADD COLUMN patient_id uuid;
ALTER TABLE users ADD CONSTRAINT users_patient_link CHECK ((role = 'patient') = (patient_id IS NOT NULL));

DROP POLICY tenant_isolation ON users;

-- Admins manage every account of their practice.
CREATE POLICY users_admin ON users
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'admin')
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'admin');
-- Staff see staff (to schedule with colleagues), never patients' accounts.
CREATE POLICY users_staff_read ON users FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id())
           AND (SELECT current_app_role()) IN ('therapist', 'receptionist')
           AND role <> 'patient');
-- Everyone sees and may update their own account (password change, last login).
CREATE POLICY users_self_read ON users FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id()) AND id = (SELECT current_app_user_id()));
CREATE POLICY users_self_update ON users FOR UPDATE
    USING (tenant_id = (SELECT current_tenant_id()) AND id = (SELECT current_app_user_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND id = (SELECT current_app_user_id()));
-- Login sees only the account whose email it was given.
CREATE POLICY users_login_lookup ON users FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id()) AND email = (SELECT current_login_email()));

CREATE INDEX users_tenant_email_idx ON users (tenant_id, email);

-- A user may not change their own role or practice through the self-update policy: only an admin
-- context may change `role`, and nobody may move an account between practices.
CREATE FUNCTION users_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id THEN
        RAISE EXCEPTION 'users: id and tenant_id are immutable' USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.role <> OLD.role OR NEW.email <> OLD.email OR NEW.patient_id IS DISTINCT FROM OLD.patient_id)
       AND current_app_role() IS DISTINCT FROM 'admin' THEN
        RAISE EXCEPTION 'users: only an admin may change role, email or patient link'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER users_guard_update BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION users_guard_update();

-- Sessions ----------------------------------------------------------------------------------

CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    user_id       uuid NOT NULL REFERENCES users (id),
    -- The role when the session began. Role changes and disabling revoke every session, so it
    -- cannot go stale; keeping it here lets authentication avoid reading the users table.
    role          text NOT NULL CHECK (role IN ('admin', 'therapist', 'receptionist', 'patient')),
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX sessions_tenant_user_idx ON sessions (tenant_id, user_id);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY sessions_by_token ON sessions FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id()) AND token_hash = (SELECT current_token_hash()));
CREATE POLICY sessions_owner ON sessions
    USING (tenant_id = (SELECT current_tenant_id())
           AND (user_id = (SELECT current_app_user_id()) OR (SELECT current_app_role()) = 'admin'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id())
           AND (user_id = (SELECT current_app_user_id()) OR (SELECT current_app_role()) = 'admin'));

GRANT SELECT, INSERT ON sessions TO praxis_runtime;
GRANT UPDATE (last_seen_at, revoked_at) ON sessions TO praxis_runtime;

-- API keys ----------------------------------------------------------------------------------

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    -- Public identifier shown in lists and audit entries; never the secret.
    key_id        text NOT NULL CHECK (key_id ~ '^[A-Za-z0-9_-]{4,32}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    scopes        text[] NOT NULL,
    created_by    uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    UNIQUE (tenant_id, key_id)
);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_by_token ON api_keys FOR SELECT
    USING (tenant_id = (SELECT current_tenant_id()) AND token_hash = (SELECT current_token_hash()));
CREATE POLICY api_keys_touch ON api_keys FOR UPDATE
    USING (tenant_id = (SELECT current_tenant_id()) AND token_hash = (SELECT current_token_hash()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND token_hash = (SELECT current_token_hash()));
CREATE POLICY api_keys_admin ON api_keys
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'admin')
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'admin');

GRANT SELECT, INSERT ON api_keys TO praxis_runtime;
GRANT UPDATE (last_used_at, revoked_at) ON api_keys TO praxis_runtime;

-- Users: column-level grants instead of the blanket UPDATE of the foundation.
REVOKE UPDATE ON users FROM praxis_runtime;
GRANT UPDATE (email, role, password_hash, password_changed_at, disabled_at, last_login_at, patient_id)
    ON users TO praxis_runtime;
