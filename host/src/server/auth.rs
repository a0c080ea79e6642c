//! Who is calling: bearer tokens and their roles. The admin's token comes
//! from a file given at start; tenants' tokens are made by the admin or a
//! tenant-admin, random (`sluice_ID_SECRET`), shown once, kept only as the
//! sha256 of the secret, compared in constant time, with a role, an
//! optional expiry, and revocable.
//!
//! Roles are ordered, each allowing what the one before allows: a viewer
//! reads; an operator also cancels, stops, savepoints, starts and
//! rescales; a developer also uploads modules and files, submits, upgrades
//! and deletes; a tenant-admin also manages the tenant's tokens. A caller
//! asking for another tenant's resource is told it does not exist.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::server::disk;
use crate::server::error::AppError;

/// A tenant token's role; each allows what the ones before it allow.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads everything of its tenant.
    Viewer,
    /// Also cancels, stops, savepoints, starts and rescales jobs.
    Operator,
    /// Also uploads modules and files, submits, upgrades and deletes jobs.
    Developer,
    /// Also creates, lists and revokes the tenant's tokens.
    TenantAdmin,
}

impl Role {
    /// The role's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::TenantAdmin => "tenant-admin",
        }
    }
}

/// A token as the server keeps it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TokenRecord {
    /// Its public id (the middle part of the token).
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The sha256 of the secret, hex.
    pub hash: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it stops working (Unix ms), if ever.
    pub expires_ms: Option<u64>,
    /// Revoked: it works no more.
    pub revoked: bool,
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The server's admin.
    Admin,
    /// A tenant's token.
    Tenant {
        /// The tenant.
        tenant: String,
        /// The token's role.
        role: Role,
    },
}

impl Caller {
    /// Allows the call on `tenant`'s resources with at least `role`:
    /// another tenant's resources do not exist for this caller (404), a
    /// role too low is 403.
    pub fn require(&self, tenant: &str, role: Role) -> Result<(), AppError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant { tenant: own, .. } if own != tenant => Err(no_tenant(tenant)),
            Caller::Tenant { role: has, .. } if *has < role => Err(AppError::Forbidden(format!(
                "this token's role `{}` does not allow this; it needs `{}` or above",
                has.as_str(),
                role.as_str()
            ))),
            Caller::Tenant { .. } => Ok(()),
        }
    }

    /// Allows only the admin.
    pub fn require_admin(&self) -> Result<(), AppError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant { .. } => Err(AppError::Forbidden(
                "only the server's admin token may do this".into(),
            )),
        }
    }

    /// The tenant whose resources this caller sees; `None` for the admin.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant { tenant, .. } => Some(tenant),
        }
    }
}

/// The 404 for a tenant the caller may not see or that does not exist.
pub fn no_tenant(tenant: &str) -> AppError {
    AppError::NotFound(format!("no tenant `{}`", shown(tenant)))
}

/// A client's value cut for a message.
pub fn shown(s: &str) -> String {
    crate::fault::shorten(s, 64)
}

/// A new token for `tenant`: the token to show once, and its record.
pub fn make_token(
    tenant: &str,
    name: &str,
    role: Role,
    expires_ms: Option<u64>,
) -> (String, TokenRecord) {
    let id = disk::new_id();
    let secret = disk::hex(&disk::random_bytes::<32>());
    let record = TokenRecord {
        id: id.clone(),
        tenant: tenant.to_string(),
        name: name.to_string(),
        role,
        hash: disk::sha256(secret.as_bytes()),
        created_ms: disk::now_ms(),
        expires_ms,
        revoked: false,
    };
    (format!("sluice_{id}_{secret}"), record)
}

/// Why a token was refused, for the auth-failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a token of this server, or the wrong secret.
    Wrong,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl AuthFailure {
    /// The label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Wrong => "wrong",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
        }
    }

    /// The 401 a client sees: it does not tell a wrong id from a wrong
    /// secret.
    pub fn error(self) -> AppError {
        AppError::Unauthorized(match self {
            AuthFailure::Missing => "pass a token: `Authorization: Bearer TOKEN`".into(),
            AuthFailure::Wrong => "the token is not valid".into(),
            AuthFailure::Expired => "the token has expired; ask for a new one".into(),
            AuthFailure::Revoked => "the token was revoked".into(),
        })
    }
}

/// Splits `sluice_ID_SECRET`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("sluice_")?;
    let (id, secret) = rest.split_once('_')?;
    (disk::valid_id(id) && secret.len() <= 128).then_some((id, secret))
}

/// Checks `secret` against `record` in constant time, then its state.
pub fn verify(record: &TokenRecord, secret: &str, now_ms: u64) -> Result<Caller, AuthFailure> {
    let given = disk::sha256(secret.as_bytes());
    if !bool::from(given.as_bytes().ct_eq(record.hash.as_bytes())) {
        return Err(AuthFailure::Wrong);
    }
    if record.revoked {
        return Err(AuthFailure::Revoked);
    }
    if record.expires_ms.is_some_and(|e| e <= now_ms) {
        return Err(AuthFailure::Expired);
    }
    Ok(Caller::Tenant {
        tenant: record.tenant.clone(),
        role: record.role,
    })
}

/// Checks the admin's token (its sha256 is kept, in memory only).
pub fn is_admin(admin_hash: &str, token: &str) -> bool {
    let given = disk::sha256(token.as_bytes());
    bool::from(given.as_bytes().ct_eq(admin_hash.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_with_its_secret_and_while_valid() {
        let (token, mut record) = make_token("acme", "ci", Role::Developer, Some(2_000));
        let (id, secret) = parse_token(&token).expect("our own format");
        assert_eq!(id, record.id);
        assert!(matches!(
            verify(&record, secret, 1_000),
            Ok(Caller::Tenant {
                role: Role::Developer,
                ..
            })
        ));
        assert_eq!(
            verify(&record, "nope", 1_000).err(),
            Some(AuthFailure::Wrong)
        );
        assert_eq!(
            verify(&record, secret, 2_000).err(),
            Some(AuthFailure::Expired)
        );
        record.revoked = true;
        assert_eq!(
            verify(&record, secret, 1_000).err(),
            Some(AuthFailure::Revoked)
        );
    }

    #[test]
    fn another_tenant_is_not_found_and_a_low_role_is_forbidden() {
        let caller = Caller::Tenant {
            tenant: "a".into(),
            role: Role::Viewer,
        };
        assert!(matches!(
            caller.require("b", Role::Viewer),
            Err(AppError::NotFound(_))
        ));
        assert!(matches!(
            caller.require("a", Role::Operator),
            Err(AppError::Forbidden(_))
        ));
        assert!(caller.require("a", Role::Viewer).is_ok());
    }
}
