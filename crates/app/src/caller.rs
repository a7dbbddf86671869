//! Who a use case runs for: the practice, the actor recorded in the audit trail, what decides
//! their permissions, and the request that carried the call (if a request did).

use audit::AuditEvent;
use identity::{ApiScope, Permission, Scope};
use kernel::{Actor, Clock, RequestId, Role, TenantId, UserId};
use store_postgres::DbContext;

/// The caller of a use case. Every door builds one: the HTTP API from the authenticated
/// principal, the CLI for an operator, a worker or webhook for the practice it works for.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    /// Recorded as the actor of every audit entry the call writes.
    pub actor: Actor,
    pub access: Access,
    /// Stamped on the audit entries, so an entry leads back to the request's log lines.
    pub request_id: Option<RequestId>,
}

/// What decides a caller's permissions, and so its row-level security context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A signed-in account: its role decides (`identity::allowed`).
    Account { user: UserId, role: Role },
    /// An API key: its scopes decide (`identity::api_key_allowed`); it works practice-wide as a
    /// service, inside what its scopes allow.
    ApiKey { scopes: Vec<ApiScope> },
    /// An operator at the command line: holds the database credentials already, so acts with
    /// admin rights inside the one practice named on the command line.
    Operator,
    /// The system's own work for the practice: a worker (the reminder worker) or a verified
    /// inbound webhook. It runs in the practice's service context and holds no permission of
    /// the matrix: what it does is what its code does, not a request to authorise.
    System,
}

impl Caller {
    /// A signed-in account of `tenant`.
    pub fn account(tenant: TenantId, user: UserId, role: Role) -> Self {
        Self {
            tenant,
            actor: Actor::User { tenant, user, role },
            access: Access::Account { user, role },
            request_id: None,
        }
    }

    /// An operator command (`praxis users disable`, ...), recorded as the system component
    /// `cli`.
    pub fn operator(tenant: TenantId) -> Self {
        Self { tenant, actor: Actor::System { component: "cli".into() }, access: Access::Operator, request_id: None }
    }

    /// The system's own work for `tenant`, recorded as `actor` (a worker's component, a
    /// webhook's provider).
    pub fn system(tenant: TenantId, actor: Actor) -> Self {
        Self { tenant, actor, access: Access::System, request_id: None }
    }

    pub fn with_request_id(mut self, request_id: Option<RequestId>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The signed-in account, if the caller is one.
    pub fn user(&self) -> Option<UserId> {
        match self.access {
            Access::Account { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The row-level security context of this caller's database work.
    pub fn db_context(&self) -> DbContext {
        match &self.access {
            Access::Account { user, role } => DbContext::user(self.tenant, *user, *role),
            Access::ApiKey { .. } | Access::System => DbContext::service(self.tenant),
            Access::Operator => DbContext::operator(self.tenant),
        }
    }

    /// How far `permission` reaches for this caller. An operator reaches the whole practice; the
    /// system's own work reaches nothing through the matrix.
    pub fn scope(&self, permission: Permission) -> Scope {
        match &self.access {
            Access::Account { role, .. } => identity::allowed(*role, permission),
            Access::ApiKey { scopes } => identity::api_key_allowed(scopes, permission),
            Access::Operator => Scope::Tenant,
            Access::System => Scope::Denied,
        }
    }

    /// An audit entry of this caller in its practice, stamped with the request id.
    pub fn audit_event(&self, action: audit::Action, resource_type: &str, clock: &dyn Clock) -> AuditEvent {
        let event = AuditEvent::new(self.tenant, self.actor.clone(), action, resource_type, clock);
        match &self.request_id {
            Some(id) => event.with_request_id(id.clone()),
            None => event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_key_works_as_a_service_and_an_operator_as_an_admin() {
        let tenant = TenantId::new();
        let key = Caller { access: Access::ApiKey { scopes: vec![] }, ..Caller::operator(tenant) };
        assert!(key.db_context().service);
        assert_eq!(key.scope(Permission::UserManage), Scope::Denied);
        let operator = Caller::operator(tenant);
        assert_eq!(operator.db_context(), DbContext::operator(tenant));
        assert_eq!(operator.scope(Permission::UserManage), Scope::Tenant);
    }
}
