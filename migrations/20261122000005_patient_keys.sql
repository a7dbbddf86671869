-- Per-patient data keys (DEKs), stored only wrapped by a key-encryption key (KEK) held in a KMS.
--
-- One row per DEK generation of a patient. `kek_id` / `kek_version` name the KEK that wrapped
-- `wrapped_dek` (the `crypto::WrappedDataKey` fields); `praxis keys rotate` and `praxis keys
-- migrate` rewrite these three columns (and `rewrapped_at`) in small batches, row by row.
-- Crypto-shredding (erasure) empties `wrapped_dek` and sets `destroyed_at`; the row itself stays,
-- so a field ciphertext naming this generation fails with "key destroyed" rather than "unknown".
-- `patient_id` has no foreign key yet: the patients table comes with the patients issue.

CREATE TABLE patient_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    patient_id    uuid NOT NULL,
    generation    integer NOT NULL CHECK (generation >= 1),
    kek_id        text NOT NULL CHECK (length(kek_id) BETWEEN 1 AND 255),
    kek_version   text NOT NULL CHECK (length(kek_version) <= 255),
    wrapped_dek   bytea,
    created_at    timestamptz NOT NULL,
    rewrapped_at  timestamptz,
    destroyed_at  timestamptz,
    PRIMARY KEY (tenant_id, patient_id, generation),
    -- A live key has its wrapped DEK; a destroyed one has none left.
    CONSTRAINT patient_keys_live_has_key
        CHECK (destroyed_at IS NOT NULL OR (wrapped_dek IS NOT NULL AND length(wrapped_dek) > 0)),
    CONSTRAINT patient_keys_destroyed_has_no_key
        CHECK (destroyed_at IS NULL OR wrapped_dek IS NULL OR length(wrapped_dek) = 0)
);

ALTER TABLE patient_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE patient_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON patient_keys
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

-- No DELETE: a key is destroyed by emptying it, never by removing its row. Only the wrapping
-- and the lifecycle timestamps may change; the identity of a key (tenant, patient, generation,
-- created_at) may not.
GRANT SELECT, INSERT ON patient_keys TO praxis_runtime;
GRANT UPDATE (kek_id, kek_version, wrapped_dek, rewrapped_at, destroyed_at) ON patient_keys TO praxis_runtime;
