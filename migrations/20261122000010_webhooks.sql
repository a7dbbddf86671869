-- Inbound webhooks (issue #7): the durable inbox that makes processing exactly-once, and the log
-- of inbound messages (WhatsApp, Twilio).
--
-- webhook_inbox holds one row per processed event key: (practice, provider, the provider's event
-- id). The primary key is the durable half of de-duplication: Redis claims keep concurrent
-- copies apart cheaply, but a claim can be lost (FLUSHALL, failover, eviction, Redis down); the
-- key cannot. The row is inserted first in the handler's transaction, so a second copy waits on
-- it and then finds it, and a failed handler rolls it back so the provider's retry is processed.
-- No payload is kept (only its SHA-256 and non-personal facts in `detail`): the provider stays
-- the system of record for an event's content.
--
-- webhook_messages logs inbound messages as metadata: never the text, only its SHA-256; the
-- patient when the sender's number matched one through the phone blind index. Rows follow their
-- patient's visibility like consents do, so a patient's GDPR export can include them, and are
-- deleted when the patient is erased.
--
-- Who sees which rows: the webhook handlers (app.role = 'service') and admins see every row of
-- their practice; other staff and patients see the messages of patients they can see.

CREATE TABLE webhook_inbox (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    provider     text NOT NULL CHECK (provider IN ('stripe', 'whatsapp', 'twilio', 'vapi', 'standard_webhooks')),
    event_key    text NOT NULL CHECK (length(event_key) BETWEEN 1 AND 600),
    event_type   text NOT NULL CHECK (length(event_type) BETWEEN 1 AND 128),
    body_sha256  bytea NOT NULL CHECK (octet_length(body_sha256) = 32),
    received_at  timestamptz NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
    PRIMARY KEY (tenant_id, provider, event_key)
);

ALTER TABLE webhook_inbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_inbox FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_inbox_practice ON webhook_inbox
    USING (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) IN ('admin', 'service'))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'service');
-- Append-only for the runtime role: a processed event is never "unprocessed" by an update.
GRANT SELECT, INSERT ON webhook_inbox TO praxis_runtime;

CREATE TABLE webhook_messages (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    provider        text NOT NULL CHECK (provider IN ('whatsapp', 'twilio')),
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'sms')),
    message_id      text NOT NULL CHECK (length(message_id) BETWEEN 1 AND 256),
    patient_id      uuid REFERENCES patients (id),
    message_type    text NOT NULL CHECK (length(message_type) BETWEEN 1 AND 128),
    content_sha256  bytea CHECK (octet_length(content_sha256) = 32),
    stop_keyword    boolean NOT NULL,
    -- The provider's own timestamp, when it sends one (WhatsApp does, Twilio does not).
    sent_at         timestamptz,
    received_at     timestamptz NOT NULL
);
CREATE INDEX webhook_messages_patient_idx ON webhook_messages (tenant_id, patient_id, received_at)
    WHERE patient_id IS NOT NULL;

ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_messages_visible ON webhook_messages
    USING (tenant_id = (SELECT current_tenant_id())
           AND ((SELECT current_app_role()) IN ('admin', 'service')
                OR (patient_id IS NOT NULL AND EXISTS (SELECT 1 FROM patients p WHERE p.id = patient_id))))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()) AND (SELECT current_app_role()) = 'service');
-- DELETE: erasure of a patient removes their message log (the policy's USING decides which rows).
GRANT SELECT, INSERT, DELETE ON webhook_messages TO praxis_runtime;
