//! Who may call what, checked before a request runs.
//!
//! - [`join_token`]: WorkerService needs the cluster's join token (`--join-token-file`).
//! - [`keys`]: the [`KeyRing`] of API keys (hashes, refreshed from the store).
//! - [`rate`]: per-key token buckets.
//!
//! Clients: [`ApiKeyCheck`] (an interceptor on JobService and AdminService, so every RPC of
//! both, present and future, is covered) authenticates the `authorization` header and puts
//! the [`Caller`] in the request's extensions; each RPC then asks the [`Gate`] for the role
//! it needs and a token of its rate class, and confines what it reads and writes to the
//! caller's tenant ([`Caller::sees`], [`Caller::job_tenant`]). Health and reflection are
//! separate services and stay open.

pub(crate) mod join_token;
pub mod keys;
pub(crate) mod rate;

pub(crate) use join_token::JoinTokenCheck;
pub use keys::KeyRing;
pub(crate) use rate::{RateClass, RateLimiter};

use std::sync::Arc;

use prometheus::IntCounterVec;
use reelfarm_proto::auth::AUTHORIZATION;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::model::{ApiKeyRecord, KeyRole};

/// Who is calling: an API key's owner, or the anonymous admin of a farm without
/// authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `None` when authentication is off.
    pub key_id: Option<String>,
    pub tenant: Option<String>,
    pub role: KeyRole,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            key_id: None,
            tenant: None,
            role: KeyRole::Admin,
        }
    }

    pub fn of_key(record: &ApiKeyRecord) -> Self {
        Self {
            key_id: Some(record.id.clone()),
            tenant: Some(record.tenant.clone()).filter(|t| !t.is_empty()),
            role: record.role,
        }
    }

    /// The tenant this caller is confined to; `None` for an admin.
    pub fn scope(&self) -> Option<&str> {
        match self.role {
            KeyRole::Admin => None,
            KeyRole::Read | KeyRole::Submit => Some(self.tenant.as_deref().unwrap_or("")),
        }
    }

    /// Whether this caller may see a job of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.scope().is_none_or(|t| t == tenant)
    }

    /// The tenant a job submitted by this caller belongs to, given the `requested` one
    /// (`field`, empty if the spec left it out) and `validated` (what validation made of it,
    /// the default filled in). A confined key's jobs are its tenant's: naming another is
    /// PERMISSION_DENIED. An admin's are the requested tenant's, else its key's, else the
    /// default.
    pub fn job_tenant(
        &self,
        field: &str,
        requested: &str,
        validated: &str,
    ) -> Result<String, Status> {
        match self.scope() {
            Some(own) if !requested.is_empty() && requested != own => {
                Err(Status::permission_denied(format!(
                    "{field}: API key {} belongs to tenant {own:?} and may not act for {requested:?}",
                    self.key_id.as_deref().unwrap_or("")
                )))
            }
            Some(own) => Ok(own.to_string()),
            None if requested.is_empty() => {
                Ok(self.tenant.clone().unwrap_or_else(|| validated.to_string()))
            }
            None => Ok(validated.to_string()),
        }
    }
}

/// The interceptor of JobService and AdminService: authenticates, or refuses with
/// UNAUTHENTICATED before the service sees the request.
#[derive(Clone)]
pub(crate) struct ApiKeyCheck {
    ring: Arc<KeyRing>,
    refused: IntCounterVec,
}

impl ApiKeyCheck {
    pub(crate) fn new(ring: Arc<KeyRing>, refused: IntCounterVec) -> Self {
        Self { ring, refused }
    }
}

impl Interceptor for ApiKeyCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        match self.ring.authenticate(header) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(e) => {
                self.refused.with_label_values(&["unauthenticated"]).inc();
                tracing::debug!(peer = ?request.remote_addr(), reason = %e, "request refused");
                Err(Status::unauthenticated(e.to_string()))
            }
        }
    }
}

/// Each RPC's check of role and rate (see the module docs).
pub struct Gate {
    limiter: RateLimiter,
    refused: IntCounterVec,
}

impl Gate {
    pub fn new(submit_per_s: f64, read_per_s: f64, refused: IntCounterVec) -> Self {
        Self {
            limiter: RateLimiter::new(submit_per_s, read_per_s),
            refused,
        }
    }

    /// The caller of `request` if its role is at least `need` and its key has a token of
    /// `class` left: else PERMISSION_DENIED, or RESOURCE_EXHAUSTED with a retry hint.
    pub fn admit<T>(
        &self,
        request: &Request<T>,
        need: KeyRole,
        class: RateClass,
    ) -> Result<Caller, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("the API key check did not run for this service"))?;
        let key = caller.key_id.as_deref().unwrap_or("");
        if caller.role < need {
            self.refused.with_label_values(&["permission_denied"]).inc();
            return Err(Status::permission_denied(format!(
                "this RPC needs a {} key; API key {key} is a {} key",
                need.name(),
                caller.role.name()
            )));
        }
        if caller.key_id.is_some() {
            if let Err(wait) = self.limiter.take(key, class) {
                self.refused.with_label_values(&["rate_limited"]).inc();
                let rate = self.limiter.rate(class);
                return Err(super::status::exhausted(
                    format!(
                        "API key {key} is over its rate ({} = {rate}/s); retry in {} ms",
                        class.flag(),
                        wait.as_millis().max(1)
                    ),
                    wait,
                ));
            }
        }
        Ok(caller)
    }

    /// PERMISSION_DENIED for a confined caller that names another tenant in `field`.
    pub fn deny_other_tenant(&self, caller: &Caller, field: &str, tenant: &str) -> Status {
        self.refused.with_label_values(&["permission_denied"]).inc();
        Status::permission_denied(format!(
            "{field}: API key {} may only see tenant {:?}, not {tenant:?}",
            caller.key_id.as_deref().unwrap_or(""),
            caller.scope().unwrap_or("")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: KeyRole, tenant: &str) -> Caller {
        Caller {
            key_id: Some("k1".into()),
            tenant: Some(tenant.to_string()).filter(|t| !t.is_empty()),
            role,
        }
    }

    #[test]
    fn a_confined_key_submits_for_its_tenant_only_and_an_admin_for_any() {
        let ads = caller(KeyRole::Submit, "ads");
        assert_eq!(ads.job_tenant("spec.tenant", "", "default").unwrap(), "ads");
        assert_eq!(ads.job_tenant("spec.tenant", "ads", "ads").unwrap(), "ads");
        let e = ads.job_tenant("spec.tenant", "crm", "crm").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().starts_with("spec.tenant:"), "{e:?}");
        let admin = caller(KeyRole::Admin, "");
        assert_eq!(admin.job_tenant("f", "crm", "crm").unwrap(), "crm");
        assert_eq!(admin.job_tenant("f", "", "default").unwrap(), "default");
        assert_eq!(
            caller(KeyRole::Admin, "ops")
                .job_tenant("f", "", "default")
                .unwrap(),
            "ops"
        );
        assert!(ads.sees("ads") && !ads.sees("crm") && admin.sees("crm"));
        assert!(Caller::anonymous().sees("anything"));
    }

    #[test]
    fn the_gate_checks_the_role_then_the_rate() {
        let refused = IntCounterVec::new(prometheus::Opts::new("r", "r"), &["reason"]).unwrap();
        let gate = Gate::new(0.1, 0.0, refused.clone());
        let mut request = Request::new(());
        let e = gate
            .admit(&request, KeyRole::Read, RateClass::Read)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal, "no caller: never admitted");
        request
            .extensions_mut()
            .insert(caller(KeyRole::Read, "ads"));
        assert!(gate.admit(&request, KeyRole::Read, RateClass::Read).is_ok());
        let e = gate
            .admit(&request, KeyRole::Submit, RateClass::Submit)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("needs a submit key"), "{e:?}");

        let mut submit = Request::new(());
        submit
            .extensions_mut()
            .insert(caller(KeyRole::Submit, "ads"));
        // 0.1/s with a burst of 10 s: one request, then the bucket is empty.
        assert!(gate
            .admit(&submit, KeyRole::Submit, RateClass::Submit)
            .is_ok());
        let e = gate
            .admit(&submit, KeyRole::Submit, RateClass::Submit)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.metadata().get("retry-after").is_some());
        assert_eq!(refused.with_label_values(&["rate_limited"]).get(), 1);
        assert_eq!(refused.with_label_values(&["permission_denied"]).get(), 1);
    }
}
