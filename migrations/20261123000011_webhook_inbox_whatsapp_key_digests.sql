-- WhatsApp message ids (`wamid.` + base64) encode the sender's phone number, and inbox rows
-- outlive the erasure of the patient who sent the message. From now on the inbox keys WhatsApp
-- events by `sha256:` + the hex SHA-256 of the id (or of `id:status` for a status update), which
-- still tells a redelivery apart (apps/api/src/webhooks/ingest.rs, `dedupe_keys`). The keys stored
-- before are rewritten with the same digest, so a redelivery of an event processed before this
-- migration is still recognised as a duplicate.
--
-- The table forces row-level security on its owner too; the rewrite needs every practice's rows,
-- so the owner is exempted for this migration's transaction only (NO FORCE, then FORCE again).
ALTER TABLE webhook_inbox NO FORCE ROW LEVEL SECURITY;
UPDATE webhook_inbox
   SET event_key = 'sha256:' || encode(sha256(convert_to(event_key, 'UTF8')), 'hex')
 WHERE provider = 'whatsapp' AND event_key NOT LIKE 'sha256:%';
ALTER TABLE webhook_inbox FORCE ROW LEVEL SECURITY;
