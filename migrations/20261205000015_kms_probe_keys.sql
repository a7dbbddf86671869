-- The start-up check of the KMS against what the database holds (`praxis serve`, `praxis keys
-- rotate|migrate|reencrypt`): after a round trip with a fresh key, the server unwraps one stored
-- key of each kind, the newest live patient DEK and the newest practice key, under its proper key
-- context. A KMS that cannot open them (a lost local key file replaced by a new one, the wrong
-- Vault key or AWS key) then stops the start with what was found, instead of a server that is
-- ready and answers 500 to every patient read.
--
-- The server connects as the runtime role, which sees one practice at a time; the check needs
-- the newest key of all. Like audit_practices_to_seal(), kms_probe_keys() runs as the owner with
-- `praxis.kms_probe` on for its two queries, and these policies admit exactly that: a role
-- outside praxis_runtime that opted in. What the runtime role learns through it: one practice
-- id and one patient id with their wrapped keys (which only the KMS opens, and the runtime role
-- may set any practice's context anyway; row-level security guards against the application's
-- mistakes, not against itself), and counts of stored keys. Like the other cross-practice
-- functions it answers only the workers' scan context (`practice_scan_allowed()`, migration
-- 20261205000014): no request, always in one practice's context, can call it.
CREATE POLICY patient_keys_kms_probe ON patient_keys FOR SELECT
    USING (current_setting('praxis.kms_probe', true) = 'on'
           AND NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));
CREATE POLICY tenant_keys_kms_probe ON tenant_keys FOR SELECT
    USING (current_setting('praxis.kms_probe', true) = 'on'
           AND NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));

-- At most two rows: the newest live patient DEK (`purpose` 'patient-data'), and the newest
-- practice key (its purpose). Each with how many live keys of its table share its KEK id and
-- version, and how many live keys its table holds.
CREATE FUNCTION kms_probe_keys()
    RETURNS TABLE (purpose text, probe_tenant uuid, probe_patient uuid, probe_generation integer,
                   probe_kek_id text, probe_kek_version text, wrapped bytea,
                   under_same_kek bigint, stored bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    PERFORM practice_scan_allowed(1);
    PERFORM set_config('praxis.kms_probe', 'on', true);
    RETURN QUERY
        SELECT 'patient-data'::text, n.tenant_id, n.patient_id, n.generation, n.kek_id, n.kek_version,
               n.wrapped_dek,
               (SELECT count(*) FROM public.patient_keys k
                 WHERE k.destroyed_at IS NULL AND k.kek_id = n.kek_id AND k.kek_version = n.kek_version),
               (SELECT count(*) FROM public.patient_keys k WHERE k.destroyed_at IS NULL)
        FROM (SELECT p.* FROM public.patient_keys p WHERE p.destroyed_at IS NULL
              ORDER BY p.created_at DESC LIMIT 1) n;
    RETURN QUERY
        SELECT n.purpose, n.tenant_id, NULL::uuid, n.generation, n.kek_id, n.kek_version, n.wrapped_key,
               (SELECT count(*) FROM public.tenant_keys k WHERE k.kek_id = n.kek_id AND k.kek_version = n.kek_version),
               (SELECT count(*) FROM public.tenant_keys k)
        FROM (SELECT t.* FROM public.tenant_keys t ORDER BY t.created_at DESC LIMIT 1) n;
    PERFORM set_config('praxis.kms_probe', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION kms_probe_keys() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kms_probe_keys() TO praxis_runtime;
