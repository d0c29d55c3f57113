//! Accounts and their tokens (`/v1/accounts`).

use serde::{Deserialize, Serialize};

/// The public description of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountInfo {
    /// `acc_...`.
    pub id: String,
    /// Unique among accounts.
    pub name: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// A disabled account's tokens are refused.
    pub disabled: bool,
    /// The crypto key id of the account's default P-256 signing key.
    pub signing_key: String,
    /// Its public key, SEC1 compressed, hex.
    pub public_key: String,
    /// The signing key's addresses.
    pub addresses: Addresses,
    /// Live tokens.
    pub tokens: usize,
}

/// The addresses of an account's signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Addresses {
    /// Neo N3 address of the signing key (version 0x35, Base58Check of the verification script hash).
    pub neo_n3: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// `tok_...`.
    pub id: String,
    /// A name to recognise it by.
    pub name: String,
    /// What it may do: `*`, a service (`storage`) or `SERVICE:OPERATION` (`storage:get`).
    pub scopes: Vec<String>,
    /// When it was issued, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it expires, in milliseconds since the Unix epoch; `None`: never.
    pub expires_ms: Option<u64>,
}

/// A newly issued token: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The token as it will be listed.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token (`cls_...`).
    pub secret: String,
}

/// A new account and its first token (every scope, no expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    /// The account.
    pub account: AccountInfo,
    /// Its first token.
    pub token: IssuedToken,
}

/// `GET /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountList {
    /// Every account.
    pub accounts: Vec<AccountInfo>,
}

/// `GET /v1/accounts/{id}/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    /// The account's live tokens.
    pub tokens: Vec<TokenInfo>,
}

/// The body of `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The account's name; names are unique. 1 to 64 characters once leading and trailing
    /// whitespace is trimmed, no control characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
}

/// The body of `POST /v1/accounts/{id}/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// A name to recognise it by (default `unnamed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absent: the same scopes as the caller's token (every scope for the admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Seconds until the token expires; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}
