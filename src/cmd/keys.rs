//! `reelfarm keys create|list|revoke`: API keys (AdminService, an admin key required).

use anyhow::Context as _;
use reelfarm_proto::v1;

use crate::client::Target;
use crate::output::Format;

/// `submit`, `read` or `admin`, as the CLI spells the roles.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Role {
    Read,
    Submit,
    Admin,
}

impl Role {
    fn proto(self) -> v1::ApiKeyRole {
        match self {
            Role::Read => v1::ApiKeyRole::Read,
            Role::Submit => v1::ApiKeyRole::Submit,
            Role::Admin => v1::ApiKeyRole::Admin,
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match v1::ApiKeyRole::try_from(role) {
        Ok(v1::ApiKeyRole::Read) => "read",
        Ok(v1::ApiKeyRole::Submit) => "submit",
        Ok(v1::ApiKeyRole::Admin) => "admin",
        _ => "unknown",
    }
}

fn json(k: &v1::ApiKey) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "tenant": k.tenant,
        "role": role_name(k.role),
        "description": k.description,
        "created_unix_ms": k.created_unix_ms,
        "revoked_unix_ms": (k.revoked_unix_ms > 0).then_some(k.revoked_unix_ms),
    })
}

fn print(k: &v1::ApiKey, format: Format) {
    match format {
        Format::Json => println!("{}", json(k)),
        Format::Text => println!(
            "{:<18} {:<16} {:<7} {:<8} {}",
            k.id,
            if k.tenant.is_empty() { "*" } else { &k.tenant },
            role_name(k.role),
            if k.revoked_unix_ms > 0 {
                "revoked"
            } else {
                "active"
            },
            k.description
        ),
    }
}

/// Prints the new key once: on stdout alone in text form (so `KEY=$(reelfarm keys create
/// ...)` works), its record on stderr.
pub async fn create(
    target: &Target,
    tenant: String,
    role: Role,
    description: String,
    format: Format,
) -> anyhow::Result<()> {
    let resp = crate::client::admin(target)
        .await?
        .create_api_key(v1::CreateApiKeyRequest {
            tenant,
            role: role.proto() as i32,
            description,
        })
        .await
        .context("CreateApiKey")?
        .into_inner();
    let key = resp.key.context("CreateApiKey returned no key")?;
    match format {
        Format::Json => {
            let mut v = json(&key);
            v["secret"] = resp.secret.into();
            println!("{v}");
        }
        Format::Text => {
            eprintln!(
                "created API key {} ({} for tenant {}); it is shown once:",
                key.id,
                role_name(key.role),
                if key.tenant.is_empty() {
                    "*"
                } else {
                    &key.tenant
                }
            );
            println!("{}", resp.secret);
        }
    }
    Ok(())
}

pub async fn list(target: &Target, tenant: String, format: Format) -> anyhow::Result<()> {
    let resp = crate::client::admin(target)
        .await?
        .list_api_keys(v1::ListApiKeysRequest { tenant })
        .await
        .context("ListApiKeys")?
        .into_inner();
    for k in &resp.keys {
        print(k, format);
    }
    Ok(())
}

pub async fn revoke(target: &Target, id: String, format: Format) -> anyhow::Result<()> {
    let resp = crate::client::admin(target)
        .await?
        .revoke_api_key(v1::RevokeApiKeyRequest { id })
        .await
        .context("RevokeApiKey")?
        .into_inner();
    print(&resp.key.context("RevokeApiKey returned no key")?, format);
    Ok(())
}
