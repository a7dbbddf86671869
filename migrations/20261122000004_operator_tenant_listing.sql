-- Operators (the owner role, used by `praxis migrate` and maintenance commands such as
-- `praxis audit verify` across every practice) may list practices: ids and names, no patient
-- data. The runtime role (every member of praxis_runtime) still sees only its own practice, and
-- every tenant-scoped table still shows the owner nothing until it sets a tenant context.
CREATE POLICY tenants_operator_list ON tenants FOR SELECT
    USING (NOT pg_has_role(current_user, 'praxis_runtime', 'MEMBER'));
