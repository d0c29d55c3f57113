//! `cloister account ...`: the admin's view of accounts and their tokens, over the HTTP API.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Target;
use crate::client::{Api, text};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AccountCommand {
    /// Create an account; prints its first token (every scope, no expiry) once.
    Create {
        /// The account's name; names are unique.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Every account: id, name, whether disabled, live tokens, Neo N3 address.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// One account, with its signing key and addresses.
    Show {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Refuse every token of the account (its data stays).
    Disable {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Accept the account's tokens again.
    Enable {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete the account: its runs stop, its values, keys and tokens are deleted.
    Delete {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Issue a token for the account; prints its secret once.
    Token {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        /// A name to recognise it by in listings.
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long = "scope", value_name = "SCOPE", help = scope_help())]
        scopes: Vec<String>,
        /// Expire after this long (`90d`, `12h`, `30m`); default: never.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// The account's tokens (never their secrets).
    Tokens {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke one token; it stops working at once.
    Revoke {
        /// The account's id (`acc_...`), as `cloister account list` shows it.
        id: String,
        /// The token's id (`tok_...`), as `cloister account tokens` lists it.
        #[arg(value_name = "TOKEN_ID")]
        token_id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// The help of `--scope`, listing the scope areas the account service knows.
fn scope_help() -> String {
    let areas: Vec<String> = account::Area::ALL
        .iter()
        .map(|a| format!("`{}`", a.as_str()))
        .collect();
    format!(
        "A scope: `*`, a service ({}) or SERVICE:OPERATION (`storage:get`). Repeat for several; \
         default `*`",
        areas.join(", ")
    )
}

pub(crate) async fn run(command: AccountCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        AccountCommand::Create { name, target } => {
            let created = Api::new(target)?
                .call(Method::POST, "/v1/accounts", Some(&json!({ "name": name })))
                .await?;
            describe(&mut out, &created["account"])?;
            writeln!(
                out,
                "token:       {} ({}, scopes *)\n\nThe token's secret is shown only now; keep it:\n{}",
                text(&created["token"]["id"]),
                text(&created["token"]["name"]),
                text(&created["token"]["secret"])
            )?;
        }
        AccountCommand::List { target } => {
            let body = Api::new(target)?
                .call(Method::GET, "/v1/accounts", None)
                .await?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header(["ID", "NAME", "DISABLED", "TOKENS", "NEO N3 ADDRESS"]);
            for a in body["accounts"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                table.add_row([
                    text(&a["id"]),
                    text(&a["name"]),
                    text(&a["disabled"]),
                    text(&a["tokens"]),
                    text(&a["addresses"]["neo_n3"]),
                ]);
            }
            writeln!(out, "{table}")?;
        }
        AccountCommand::Show { id, target } => {
            let account = Api::new(target)?
                .call(Method::GET, &format!("/v1/accounts/{id}"), None)
                .await?;
            describe(&mut out, &account)?;
        }
        AccountCommand::Disable { id, target } => {
            Api::new(target)?
                .call(Method::POST, &format!("/v1/accounts/{id}/disable"), None)
                .await?;
            writeln!(
                out,
                "{id}: disabled; its tokens are refused until it is enabled"
            )?;
        }
        AccountCommand::Enable { id, target } => {
            Api::new(target)?
                .call(Method::POST, &format!("/v1/accounts/{id}/enable"), None)
                .await?;
            writeln!(out, "{id}: enabled")?;
        }
        AccountCommand::Delete { id, target } => {
            Api::new(target)?
                .call(Method::DELETE, &format!("/v1/accounts/{id}"), None)
                .await?;
            writeln!(out, "{id}: deleted, with its values, keys and tokens")?;
        }
        AccountCommand::Token {
            id,
            name,
            scopes,
            expires_in,
            target,
        } => {
            let mut body = json!({ "name": name });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if let Some(after) = expires_in {
                body["expires_in_s"] = json!(after.as_secs().max(1));
            }
            let token = Api::new(target)?
                .call(
                    Method::POST,
                    &format!("/v1/accounts/{id}/tokens"),
                    Some(&body),
                )
                .await?;
            writeln!(
                out,
                "token {} ({}), scopes {}, expires {}\n\nThe secret is shown only now; keep it:\n{}",
                text(&token["id"]),
                text(&token["name"]),
                scope_list(&token["scopes"]),
                expiry(&token["expires_ms"]),
                text(&token["secret"])
            )?;
        }
        AccountCommand::Tokens { id, target } => {
            let body = Api::new(target)?
                .call(Method::GET, &format!("/v1/accounts/{id}/tokens"), None)
                .await?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header(["ID", "NAME", "SCOPES", "EXPIRES"]);
            for t in body["tokens"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                table.add_row([
                    text(&t["id"]),
                    text(&t["name"]),
                    scope_list(&t["scopes"]),
                    expiry(&t["expires_ms"]),
                ]);
            }
            writeln!(out, "{table}")?;
        }
        AccountCommand::Revoke {
            id,
            token_id,
            target,
        } => {
            Api::new(target)?
                .call(
                    Method::DELETE,
                    &format!("/v1/accounts/{id}/tokens/{token_id}"),
                    None,
                )
                .await?;
            writeln!(out, "{token_id}: revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(out: &mut impl std::io::Write, account: &Value) -> anyhow::Result<()> {
    writeln!(
        out,
        "account:     {} ({}){}\nsigning key: {} (P-256, public {})\nNeo N3:      {}\ntokens:      {} live",
        text(&account["id"]),
        text(&account["name"]),
        if account["disabled"] == true {
            ", DISABLED"
        } else {
            ""
        },
        text(&account["signing_key"]),
        text(&account["public_key"]),
        text(&account["addresses"]["neo_n3"]),
        text(&account["tokens"]),
    )?;
    Ok(())
}

fn scope_list(scopes: &Value) -> String {
    scopes
        .as_array()
        .map(|s| s.iter().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn expiry(expires_ms: &Value) -> String {
    match expires_ms.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => "never".into(),
    }
}
