//! `cloister account ...`: the admin's view of accounts and their tokens, over the HTTP API.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use cloister_sdk::types::accounts::{AccountInfo, IssueBody};
use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;

use crate::client::{Reported, Target, connect};

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
            let created = connect(target)?.create_account(&name).await.reported()?;
            describe(&mut out, &created.account)?;
            writeln!(
                out,
                "token:       {} ({}, scopes *)\n\nThe token's secret is shown only now; keep it:\n{}",
                created.token.info.id, created.token.info.name, created.token.secret
            )?;
        }
        AccountCommand::List { target } => {
            let body = connect(target)?.accounts().await.reported()?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header(["ID", "NAME", "DISABLED", "TOKENS", "NEO N3 ADDRESS"]);
            for a in &body.accounts {
                table.add_row([
                    a.id.clone(),
                    a.name.clone(),
                    a.disabled.to_string(),
                    a.tokens.to_string(),
                    a.addresses.neo_n3.clone(),
                ]);
            }
            writeln!(out, "{table}")?;
        }
        AccountCommand::Show { id, target } => {
            let account = connect(target)?.account(&id).await.reported()?;
            describe(&mut out, &account)?;
        }
        AccountCommand::Disable { id, target } => {
            connect(target)?.disable_account(&id).await.reported()?;
            writeln!(
                out,
                "{id}: disabled; its tokens are refused until it is enabled"
            )?;
        }
        AccountCommand::Enable { id, target } => {
            connect(target)?.enable_account(&id).await.reported()?;
            writeln!(out, "{id}: enabled")?;
        }
        AccountCommand::Delete { id, target } => {
            connect(target)?.delete_account(&id).await.reported()?;
            writeln!(out, "{id}: deleted, with its values, keys and tokens")?;
        }
        AccountCommand::Token {
            id,
            name,
            scopes,
            expires_in,
            target,
        } => {
            let asked = IssueBody {
                name: Some(name),
                scopes: (!scopes.is_empty()).then_some(scopes),
                expires_in_s: expires_in.map(|after| after.as_secs().max(1)),
            };
            let token = connect(target)?.issue_token(&id, &asked).await.reported()?;
            writeln!(
                out,
                "token {} ({}), scopes {}, expires {}\n\nThe secret is shown only now; keep it:\n{}",
                token.info.id,
                token.info.name,
                token.info.scopes.join(" "),
                expiry(token.info.expires_ms),
                token.secret
            )?;
        }
        AccountCommand::Tokens { id, target } => {
            let body = connect(target)?.tokens(&id).await.reported()?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header(["ID", "NAME", "SCOPES", "EXPIRES"]);
            for t in &body.tokens {
                table.add_row([
                    t.id.clone(),
                    t.name.clone(),
                    t.scopes.join(" "),
                    expiry(t.expires_ms),
                ]);
            }
            writeln!(out, "{table}")?;
        }
        AccountCommand::Revoke {
            id,
            token_id,
            target,
        } => {
            connect(target)?
                .revoke_token(&id, &token_id)
                .await
                .reported()?;
            writeln!(out, "{token_id}: revoked")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(out: &mut impl std::io::Write, account: &AccountInfo) -> anyhow::Result<()> {
    writeln!(
        out,
        "account:     {} ({}){}\nsigning key: {} (P-256, public {})\nNeo N3:      {}\ntokens:      {} live",
        account.id,
        account.name,
        if account.disabled { ", DISABLED" } else { "" },
        account.signing_key,
        account.public_key,
        account.addresses.neo_n3,
        account.tokens,
    )?;
    Ok(())
}

fn expiry(expires_ms: Option<u64>) -> String {
    match expires_ms {
        Some(ms) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                .to_string()
        }
        None => "never".into(),
    }
}
