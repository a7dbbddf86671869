-- Recording an audit entry no longer serialises a practice (docs/architecture.md, "The audit
-- trail: record now, seal shortly after").
--
-- Before, every audited request locked its practice's audit_heads row until commit, so one
-- practice's audited work ran one transaction at a time. Now a request only INSERTs its entry,
-- unsealed (no seq, no hashes, a digest of its content), in the transaction of the change it
-- records; the sealer links committed entries into the chain shortly after, in batches, behind
-- the head lock that only sealers take. An entry is durable exactly when its change is, as before.
--
-- Rows and order:
--   id      the order entries were recorded (identity; never reused, never changed by sealing),
--           the key listings and pagination use, stable while entries get sealed;
--   seq     the chain position, set by the sealer (NULL until then), unique per practice;
--   digest  SHA-256 of the content (crates/audit `content_digest`), written when recorded, so an
--           edit of an entry that is not sealed yet is still found.

ALTER TABLE audit_entries ADD COLUMN id bigint;
ALTER TABLE audit_entries ADD COLUMN digest bytea CHECK (digest IS NULL OR octet_length(digest) = 32);

-- Existing entries are all sealed: number them in chain order per practice, so a practice's
-- listing by id is its chain order. The append-only trigger is lifted for this one statement of
-- the migration (which runs as the owner, in one transaction) and restored below, in a new form.
ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only;
UPDATE audit_entries e SET id = numbered.n
FROM (SELECT tenant_id, seq, row_number() OVER (ORDER BY tenant_id, seq) AS n FROM audit_entries) numbered
WHERE e.tenant_id = numbered.tenant_id AND e.seq = numbered.seq;
ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only;

ALTER TABLE audit_entries ALTER COLUMN id SET NOT NULL;
ALTER TABLE audit_entries ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('audit_entries', 'id'), coalesce((SELECT max(id) FROM audit_entries), 0) + 1, false);

ALTER TABLE audit_entries DROP CONSTRAINT audit_entries_pkey;
ALTER TABLE audit_entries ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE audit_entries ALTER COLUMN seq DROP NOT NULL;
ALTER TABLE audit_entries ALTER COLUMN prev_hash DROP NOT NULL;
ALTER TABLE audit_entries ALTER COLUMN hash DROP NOT NULL;
-- The chain position stays unique per practice: two sealers can never place two entries at one
-- seq (the backstop behind the head lock, as the primary key was before).
ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_tenant_seq_key UNIQUE (tenant_id, seq);
-- Sealed means seq and both hashes; unsealed means none of them and a digest.
ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_seal_shape CHECK (
    ((seq IS NULL) = (prev_hash IS NULL) AND (seq IS NULL) = (hash IS NULL))
    AND (seq IS NOT NULL OR digest IS NOT NULL)
);
-- What the sealer and the practice listing of sealers look for: small, as entries are sealed
-- within a second or so.
CREATE INDEX audit_entries_unsealed_idx ON audit_entries (tenant_id, id) WHERE seq IS NULL;
-- The auditors' indexes, by recording order now (was seq, which unsealed entries lack).
DROP INDEX audit_entries_resource_idx;
DROP INDEX audit_entries_actor_user_idx;
CREATE INDEX audit_entries_resource_idx ON audit_entries (tenant_id, resource_type, resource_id, id);
CREATE INDEX audit_entries_actor_user_idx ON audit_entries (tenant_id, actor_user, id) WHERE actor_user IS NOT NULL;

-- Sealing is the one change an entry may undergo: from unsealed to sealed, once, with nothing
-- else touched. For every role, the owner included (it replaces the UPDATE half of
-- audit_entries_append_only; DELETE keeps the retention purge's rule).
CREATE FUNCTION audit_entries_seal_once() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF OLD.seq IS NULL AND NEW.seq IS NOT NULL
       AND (to_jsonb(NEW) - 'seq' - 'prev_hash' - 'hash') = (to_jsonb(OLD) - 'seq' - 'prev_hash' - 'hash')
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit table % is append-only: only sealing an unsealed entry is allowed', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
REVOKE ALL ON FUNCTION audit_entries_seal_once() FROM PUBLIC;

DROP TRIGGER audit_entries_append_only ON audit_entries;
CREATE TRIGGER audit_entries_append_only
    BEFORE DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change('purgeable');
CREATE TRIGGER audit_entries_seal_once
    BEFORE UPDATE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_seal_once();

-- The runtime role seals (the sealer runs in the application): it may set the three seal
-- columns and nothing else, and the trigger lets it do so once per entry.
GRANT UPDATE (seq, prev_hash, hash) ON audit_entries TO praxis_runtime;

-- The sealer has to find which practices have unsealed entries before it can act for any of
-- them. It asks audit_practices_to_seal(), which runs as the owner with `praxis.audit_seal_scan`
-- on for its one query; this policy admits exactly that: a role outside praxis_runtime that
-- opted in, reading unsealed rows (the function below does, for one query). The runtime role learns practice ids and nothing else, and the
-- owner, outside that function, still sees one practice at a time like everyone else.
CREATE POLICY audit_entries_seal_scan ON audit_entries FOR SELECT
    USING (seq IS NULL
           AND current_setting('praxis.audit_seal_scan', true) = 'on'
           AND NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));

-- Practices with unsealed entries, the longest-waiting first. The scan setting is switched on
-- for the one query and off again before returning (a custom setting cannot be a function's SET
-- clause for a role that is not a superuser).
CREATE FUNCTION audit_practices_to_seal(max_practices integer)
    RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    PERFORM set_config('praxis.audit_seal_scan', 'on', true);
    RETURN QUERY SELECT e.tenant_id FROM public.audit_entries e
                 WHERE e.seq IS NULL
                 GROUP BY e.tenant_id ORDER BY min(e.id) LIMIT max_practices;
    PERFORM set_config('praxis.audit_seal_scan', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION audit_practices_to_seal(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_practices_to_seal(integer) TO praxis_runtime;

-- Before, the first append of a practice created its audit_heads row, whose foreign key refused an
-- unknown practice. Recording no longer touches the head, so the entry itself carries the key.
ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
