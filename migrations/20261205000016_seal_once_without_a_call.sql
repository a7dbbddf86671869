-- Sealing an entry no longer calls PL/pgSQL for it (docs/architecture.md, "The audit trail:
-- record now, seal shortly after").
--
-- The seal-once rule of migration 20261204000013 is unchanged: an UPDATE of audit_entries may only
-- seal an unsealed entry (seq, prev_hash and hash from NULL to set) and must leave every other
-- column as it was, for every role, the owner included. Until now the rule's function ran for
-- every row the sealer sealed, and compared the whole row as JSON before and after: about half
-- of what sealing one entry cost Postgres. Measured 2026-12-05, 20,000 entries sealed in one
-- UPDATE, the two triggers alternately, three times each: 41-54 µs per entry with the function
-- called for every row, 24-26 µs with this condition. Every audited request is sealed once, so
-- this is paid on every read, booking and webhook.
--
-- Now the trigger's WHEN condition states the allowed case in plain SQL, evaluated by the
-- executor without a function call; the function runs only for an UPDATE that is not a pure seal,
-- and refuses it with the same error as before. The condition names every column other than the
-- three seal columns: a column added to audit_entries later must be added to it too, and the test
-- `audit_sealing::the_seal_once_condition_names_every_other_column` fails until it is.
DROP TRIGGER audit_entries_seal_once ON audit_entries;
CREATE TRIGGER audit_entries_seal_once
    BEFORE UPDATE ON audit_entries
    FOR EACH ROW
    WHEN (NOT (
        OLD.seq IS NULL AND NEW.seq IS NOT NULL
        AND (OLD.tenant_id, OLD.id, OLD.digest, OLD.actor_kind, OLD.actor_tenant, OLD.actor_user,
             OLD.actor_role, OLD.actor_name, OLD.action, OLD.resource_type, OLD.resource_id,
             OLD.outcome, OLD.request_id, OLD.occurred_at, OLD.detail)
            IS NOT DISTINCT FROM
            (NEW.tenant_id, NEW.id, NEW.digest, NEW.actor_kind, NEW.actor_tenant, NEW.actor_user,
             NEW.actor_role, NEW.actor_name, NEW.action, NEW.resource_type, NEW.resource_id,
             NEW.outcome, NEW.request_id, NEW.occurred_at, NEW.detail)
    ))
    EXECUTE FUNCTION audit_entries_seal_once();
