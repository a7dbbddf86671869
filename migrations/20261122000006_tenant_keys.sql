-- Practice-wide keys, stored only wrapped by a key-encryption key (KEK) held in a KMS.
--
-- `purpose` says what the key is for (the `crypto::KeyPurpose` string, also part of the KMS key
-- context, so a key wrapped for one purpose cannot be unwrapped as another):
--   blind-index       HMAC key of the practice's blind indexes (equality search over encrypted
--                     fields such as a patient's email and phone);
--   audit-checkpoint  HMAC key that signs the practice's audit checkpoints.
-- One generation per purpose today; the generation column leaves room to replace a key.
-- `praxis keys rotate|migrate` rewrap these rows like `patient_keys` (compare-and-set on the KEK).

CREATE TABLE tenant_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    purpose       text NOT NULL CHECK (purpose IN ('blind-index', 'audit-checkpoint')),
    generation    integer NOT NULL CHECK (generation >= 1),
    kek_id        text NOT NULL CHECK (length(kek_id) BETWEEN 1 AND 255),
    kek_version   text NOT NULL CHECK (length(kek_version) <= 255),
    wrapped_key   bytea NOT NULL CHECK (length(wrapped_key) > 0),
    created_at    timestamptz NOT NULL,
    rewrapped_at  timestamptz,
    PRIMARY KEY (tenant_id, purpose, generation)
);

ALTER TABLE tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_keys
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

-- Never deleted; only the wrapping may change.
GRANT SELECT, INSERT ON tenant_keys TO praxis_runtime;
GRANT UPDATE (kek_id, kek_version, wrapped_key, rewrapped_at) ON tenant_keys TO praxis_runtime;
