//! `cloister cluster init|status|remove|rotate` (docs/cluster.md), and a starting node's admission: when its
//! database belongs to a cluster whose key it does not hold, it asks the members it was given
//! (`--join`, `[cluster] join`) before it serves anything.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use runtime::Journal;
use runtime::journal::{Cause, Event};

use crate::client::{Reported, Target, connect};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// Make the cluster on a running node whose storage is PostgreSQL: a new cluster key, sealed
    /// in that node, and the cluster's record in the database. Once per database.
    Init {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
        /// Keep asking, for up to this long (`90s`, `5m`), while the node cannot be reached or
        /// answers 503: for a hook that starts together with the node.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// Exit 0 when the database has a cluster already (`cluster.exists`), so that the
        /// command can run at every start of the node.
        #[arg(long)]
        exists_ok: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a node from the cluster: it may not join again, and, running, it gives up the
    /// cluster key and stops within a heartbeat (5 s). Ask any other member; a node does not
    /// remove itself.
    Remove {
        /// The node's id, as `cloister cluster status` lists it.
        node: String,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Rotate the cluster key: a new key, sealed to each member's own key in the database (never
    /// to a removed node), and every key of the crypto service re-wrapped under it, while every
    /// member goes on serving. After a removal, this shuts the removed node out of the keys.
    Rotate {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The cluster, the node answering, and every member with its identity and last heartbeat.
    Status {
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        ClusterCommand::Init {
            json,
            wait,
            exists_ok,
            target,
        } => {
            let made = match init(&connect(target)?, wait).await {
                Err(e) if exists_ok && e.code() == Some(EXISTS) => {
                    let message = e.api().map(|a| a.message.as_str()).unwrap_or(EXISTS);
                    writeln!(out, "nothing to do: {message}")?;
                    return Ok(ExitCode::SUCCESS);
                }
                made => made.reported()?,
            };
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&made)?)?;
            } else {
                writeln!(out, "cluster {} made on node {}", made.id, made.node)?;
                writeln!(out, "key check: {}", made.key_check)?;
                writeln!(out, "policy: {}", made.policy)?;
            }
        }
        ClusterCommand::Remove { node, json, target } => {
            let removed = connect(target)?.cluster_remove(&node).await.reported()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&removed)?)?;
            } else if removed.was_member {
                writeln!(
                    out,
                    "node {} removed by {}: it stops within a heartbeat and may not join again",
                    removed.node, removed.removed_by
                )?;
            } else {
                writeln!(
                    out,
                    "node {} was no registered member; its id may not join from now on",
                    removed.node
                )?;
            }
        }
        ClusterCommand::Rotate { json, target } => {
            let rotated = connect(target)?.cluster_rotate().await.reported()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rotated)?)?;
            } else {
                writeln!(
                    out,
                    "cluster key rotated by node {} to generation {} (key check {})",
                    rotated.node, rotated.generation, rotated.key_check
                )?;
                writeln!(
                    out,
                    "sealed to {} member(s): {}",
                    rotated.granted.len(),
                    rotated.granted.join(", ")
                )?;
                writeln!(out, "keys re-wrapped: {}", rotated.rewrapped)?;
                for s in &rotated.skipped {
                    writeln!(
                        out,
                        "left out: node {} ({}); it must join again",
                        s.node, s.reason
                    )?;
                }
                for u in &rotated.unreadable {
                    writeln!(out, "not re-wrapped, does not open: {u}")?;
                }
            }
            if !rotated.unreadable.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        ClusterCommand::Status { json, target } => {
            let status = connect(target)?.cluster().await.reported()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            match &status.cluster {
                Some(c) => {
                    writeln!(
                        out,
                        "cluster {} (made by {} at {})",
                        c.id, c.created_by, c.created_at
                    )?;
                    writeln!(
                        out,
                        "key check: {} (generation {})",
                        c.key_check, c.generation
                    )?;
                    writeln!(out, "policy: {}", c.policy)?;
                }
                None => writeln!(out, "no cluster: `cloister cluster init` makes one")?,
            }
            writeln!(
                out,
                "answered by node {} ({})",
                status.node,
                if status.member {
                    "a member: it holds the cluster key"
                } else {
                    "not a member: it holds no cluster key"
                }
            )?;
            let mut table = Table::new();
            table.load_style(UTF8_FULL_CONDENSED);
            table.set_header([
                "NODE",
                "ADDRESS",
                "PLATFORM",
                "MEASUREMENT",
                "SVN",
                "VERSION",
                "KEY",
                "HEARTBEAT",
            ]);
            let recorded = status.cluster.as_ref().map(|c| c.key_check.as_str());
            for m in &status.members {
                table.add_row([
                    m.node.clone(),
                    m.address.clone(),
                    m.platform.clone(),
                    m.measurement.chars().take(16).collect::<String>(),
                    m.security_version.to_string(),
                    m.version.clone(),
                    if Some(m.key_check.as_str()) == recorded {
                        format!("the cluster's (gen {})", m.generation)
                    } else {
                        format!("OTHER (gen {})", m.generation)
                    },
                    format!("{:.1}s ago", m.heartbeat_age_ms as f64 / 1000.0),
                ]);
            }
            writeln!(out, "{table}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The code of a second `cluster init`'s answer.
const EXISTS: &str = "cluster.exists";
/// How often `cluster init --wait` asks again.
const ASK_AGAIN: Duration = Duration::from_millis(500);

/// `POST /v1/cluster/init`; with `wait`, asked again while the node cannot be reached or answers
/// that it should be asked later, until `wait` has passed.
async fn init(
    client: &cloister_sdk::Client,
    wait: Option<Duration>,
) -> Result<cloister_sdk::types::cluster::Initialized, cloister_sdk::Error> {
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let mut said = false;
    loop {
        let answer = client.cluster_init().await;
        let later = match &answer {
            Err(cloister_sdk::Error::Unreachable { .. }) => true,
            Err(e) => e.api().is_some_and(|a| a.retryable),
            Ok(_) => false,
        };
        let time_left = deadline.is_some_and(|d| tokio::time::Instant::now() + ASK_AGAIN < d);
        if !(later && time_left) {
            return answer;
        }
        if !said {
            said = true;
            if let Err(e) = &answer {
                eprintln!("waiting for the node: {e}");
            }
        }
        tokio::time::sleep(ASK_AGAIN).await;
    }
}

/// Before a node serves: if its database belongs to a cluster whose key it does not hold, it
/// asks `members` in turn, and stops with every refusal's reason when none admits it. Answers
/// whether it was admitted now.
pub(crate) async fn join_if_needed(
    node: &cluster::Node,
    members: &[String],
    journal: &Journal,
) -> anyhow::Result<bool> {
    if node.is_member() {
        if !members.is_empty() {
            tracing::info!(
                cluster = %node.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
                "this node holds the cluster key already: no admission needed"
            );
        }
        return Ok(false);
    }
    let recorded = match node.recorded().await {
        Ok(recorded) => recorded,
        // Not on PostgreSQL: no cluster (the configuration refuses `[cluster]` there).
        Err(cluster::Error::NotPostgres) => return Ok(false),
        Err(e) => return Err(e).context("cannot read the cluster's record"),
    };
    let Some(id) = recorded else {
        if members.is_empty() {
            return Ok(false);
        }
        bail!(
            "this node was told to join ({}), but its database records no cluster: run `cloister \
             cluster init` against the first node, then start this one",
            members.join(", ")
        );
    };
    if members.is_empty() {
        bail!(
            "the database belongs to cluster {id}, and this node holds no key of it: start it \
             with --join URL (a member's API address) or [cluster] join"
        );
    }
    let mut refusals = Vec::new();
    for url in members {
        match join_through(node, url).await {
            Ok(answer) => {
                let mut detail = BTreeMap::new();
                detail.insert("member".to_owned(), answer.node.clone());
                detail.insert("url".to_owned(), url.clone());
                if answer.simulation {
                    tracing::warn!(%url, "admitted by a member on the simulation platform: nothing in this exchange is backed by hardware");
                    detail.insert(
                        "simulation".to_owned(),
                        "admitted on simulation quotes: nothing in this exchange is backed by \
                         hardware"
                            .to_owned(),
                    );
                }
                journal.append(
                    None,
                    None,
                    Event::Audit {
                        action: "cluster.joined".into(),
                        subject: answer.cluster_id.clone(),
                        detail,
                    },
                    Cause::Startup,
                );
                return Ok(true);
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(%url, %reason, "the member did not admit this node");
                let mut detail = BTreeMap::new();
                detail.insert("url".to_owned(), url.clone());
                detail.insert("reason".to_owned(), reason.clone());
                journal.append(
                    None,
                    None,
                    Event::Audit {
                        action: "cluster.join_failed".into(),
                        subject: id.clone(),
                        detail,
                    },
                    Cause::Startup,
                );
                refusals.push(format!("{url}: {reason}"));
            }
        }
    }
    bail!(
        "no member admitted this node into cluster {id}:\n  {}",
        refusals.join("\n  ")
    )
}

/// One admission through the member at `url`: its challenge, this node's quote, its answer.
async fn join_through(
    node: &cluster::Node,
    url: &str,
) -> anyhow::Result<cloister_sdk::types::cluster::JoinAnswer> {
    // No token: the member checks this node's quote, not a credential.
    let member = cloister_sdk::Client::new(url, "").context("HTTP client")?;
    let challenge = member.cluster_challenge().await.reported()?;
    let joining = node.begin_join(&challenge).await?;
    let answer = member.cluster_join(&joining.request).await.reported()?;
    node.finish_join(joining, &answer)
        .await
        .context("the member's answer is refused")?;
    Ok(answer)
}
