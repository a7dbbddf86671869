-- The two cross-practice questions the background workers ask (which practices have reminders
-- due, which have audit entries to seal) are SECURITY DEFINER functions the runtime role may
-- call. Until now any transaction of the runtime role could call them, in any context: a bug or
-- an injection in a request of practice A could list the ids of other practices with due work.
--
-- Narrowed here, in who may call them and in what they return:
-- * Only a transaction whose context is the workers' scan context may call them: no practice
--   (`app.tenant_id` unset) and `app.role` = 'practice_scan', a role no row policy admits, so
--   that context sees no practice's rows anywhere else. Every request runs in the context of
--   one practice, so no request can ask; anything else is refused with insufficient_privilege.
-- * They yield practice ids only, at most 1,000 per call (the workers ask for far fewer).
-- * The reminder outbox is readable across practices only inside reminders_due_practices(), for
--   its one query (the opt-in setting the audit scan already uses), not by any role outside
--   praxis_runtime at any time as before.

CREATE FUNCTION practice_scan_allowed(max_practices integer) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    IF current_tenant_id() IS NOT NULL OR current_app_role() IS DISTINCT FROM 'practice_scan' THEN
        RAISE EXCEPTION 'cross-practice scans are for the background workers'' scan context only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF max_practices IS NULL OR max_practices < 1 OR max_practices > 1000 THEN
        RAISE EXCEPTION 'max_practices must be between 1 and 1000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION practice_scan_allowed(integer) FROM PUBLIC;

DROP POLICY appointment_reminders_due_scan ON appointment_reminders;
CREATE POLICY appointment_reminders_due_scan ON appointment_reminders FOR SELECT
    USING (status = 'pending'
           AND current_setting('praxis.reminder_due_scan', true) = 'on'
           AND NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));

-- Same signature and result as before; now plpgsql, to check the caller and switch the scan
-- setting on for its one query (a custom setting cannot be a SET clause for a non-superuser).
CREATE OR REPLACE FUNCTION reminders_due_practices(due_by timestamptz, max_practices integer)
    RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    PERFORM practice_scan_allowed(max_practices);
    PERFORM set_config('praxis.reminder_due_scan', 'on', true);
    RETURN QUERY SELECT r.tenant_id FROM public.appointment_reminders r
                 WHERE r.status = 'pending' AND r.due_at <= due_by
                   AND (r.locked_until IS NULL OR r.locked_until <= due_by)
                 GROUP BY r.tenant_id ORDER BY min(r.due_at) LIMIT max_practices;
    PERFORM set_config('praxis.reminder_due_scan', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION reminders_due_practices(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reminders_due_practices(timestamptz, integer) TO praxis_runtime;

CREATE OR REPLACE FUNCTION audit_practices_to_seal(max_practices integer)
    RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    PERFORM practice_scan_allowed(max_practices);
    PERFORM set_config('praxis.audit_seal_scan', 'on', true);
    RETURN QUERY SELECT e.tenant_id FROM public.audit_entries e
                 WHERE e.seq IS NULL
                 GROUP BY e.tenant_id ORDER BY min(e.id) LIMIT max_practices;
    PERFORM set_config('praxis.audit_seal_scan', 'off', true);
END
$$;
REVOKE ALL ON FUNCTION audit_practices_to_seal(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_practices_to_seal(integer) TO praxis_runtime;
