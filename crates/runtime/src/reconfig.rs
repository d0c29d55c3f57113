//! Hot configuration: each new version is parsed, checked against what may only change at start,
//! applied to the running services in one step, and watched; if health or anomaly signals get worse
//! within the watch window, the previous version is applied again. Versions are applied one at a
//! time, in arrival order; the last ten are kept with their hashes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::Spec;
use crate::anomaly::ActiveAnomaly;
use crate::client::Client;
use crate::config::{Config, Problem};
use crate::event::{Cause, Event, RuntimeLevel};

const KEPT: usize = 10;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ConfigSource)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The file the runtime was started with.
    Startup,
    /// `PUT /v1/config`.
    Api,
    /// The configuration file, read again.
    File,
    /// An operator's rollback.
    Rollback,
}

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ConfigStatus)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running, inside its watch window.
    Watching,
    /// Running, or ran, and its watch window closed without trouble.
    Good,
    /// Replaced by the version before it because things got worse.
    RolledBack,
}

/// One configuration version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ConfigVersion)]
pub struct Version {
    /// Its number, from 1.
    pub version: u64,
    /// SHA-256 of the TOML text.
    pub hash: String,
    /// When it was applied.
    #[serde(serialize_with = "crate::event::serialize_time")]
    #[schema(value_type = String, format = DateTime)]
    pub applied_at: SystemTime,
    /// Where it came from.
    pub source: Source,
    /// Where it stands.
    pub status: Status,
    /// The TOML text.
    #[schema(value_type = String)]
    pub text: Arc<str>,
    /// The text, parsed.
    #[serde(skip)]
    pub config: Arc<Config>,
}

/// What became of an apply or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ConfigOutcome)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Running now. Unless the caller waited, the watch window may still roll it back.
    Applied {
        /// Its version number.
        version: u64,
        /// The SHA-256 of its text.
        hash: String,
        /// The services it changed.
        changed: Vec<String>,
        /// Whether its watch window is still open.
        watching: bool,
    },
    /// Identical to the running version; nothing changed.
    Unchanged {
        /// The running version.
        version: u64,
    },
    /// Not applied; the running configuration is untouched.
    Rejected {
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// Applied, then replaced by version `to` because of `reason`.
    RolledBack {
        /// The version rolled back.
        from: u64,
        /// The version running now.
        to: u64,
        /// What got worse.
        reason: String,
    },
}

enum Request {
    Apply {
        text: String,
        source: Source,
        wait: bool,
        reply: oneshot::Sender<Outcome>,
    },
    Rollback {
        reply: oneshot::Sender<Outcome>,
    },
}

/// Talks to the configuration controller. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    history: watch::Receiver<Vec<Version>>,
}

impl Handle {
    /// Applies `text` as the new configuration. With `wait`, answers after the watch window.
    pub async fn apply(&self, text: String, source: Source, wait: bool) -> Option<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Apply {
                text,
                source,
                wait,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Applies the version before the current one again.
    pub async fn rollback(&self) -> Option<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Rollback { reply }).await.ok()?;
        rx.await.ok()
    }

    /// The kept versions, oldest first; the last one is running.
    pub fn history(&self) -> Vec<Version> {
        self.history.borrow().clone()
    }

    /// The running version.
    pub fn current(&self) -> Option<Version> {
        self.history.borrow().last().cloned()
    }

    /// The running configuration, parsed (a live setting's value now, without cloning a version).
    pub fn config(&self) -> Option<Arc<Config>> {
        self.history.borrow().last().map(|v| v.config.clone())
    }
}

fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Adjusts every parsed version the same way the command line adjusted the first one (for example a
/// `--listen` flag), so file and API versions are compared like for like.
pub type Overrides = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// The configuration controller: a task that applies, watches and rolls back versions, one at a time.
pub struct Controller {
    client: Client,
    overrides: Overrides,
    catalog: Vec<Spec>,
    watch_window: Duration,
    history: VecDeque<Version>,
    next_version: u64,
    published: watch::Sender<Vec<Version>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("versions", &self.history.len())
            .finish()
    }
}

impl Controller {
    /// Starts the controller with the configuration the runtime was started with. `catalog` holds the
    /// built-in services' own specs. The task ends when `cancel` fires.
    pub fn spawn(
        client: Client,
        catalog: Vec<Spec>,
        text: String,
        config: Config,
        overrides: Overrides,
        cancel: CancellationToken,
    ) -> (Handle, tokio::task::JoinHandle<()>) {
        let first = Version {
            version: 1,
            hash: hash(&text),
            applied_at: SystemTime::now(),
            source: Source::Startup,
            status: Status::Good,
            text: Arc::from(text),
            config: Arc::new(config),
        };
        let watch_window = first.config.runtime.config_watch;
        let (published, history) = watch::channel(vec![first.clone()]);
        let (requests, rx) = mpsc::channel(64);
        let controller = Controller {
            client,
            overrides,
            catalog,
            watch_window,
            history: VecDeque::from([first]),
            next_version: 2,
            published,
        };
        let task = tokio::spawn(controller.run(rx, cancel));
        (Handle { requests, history }, task)
    }

    async fn run(mut self, mut requests: mpsc::Receiver<Request>, cancel: CancellationToken) {
        loop {
            let request = tokio::select! {
                () = cancel.cancelled() => return,
                r = requests.recv() => match r { Some(r) => r, None => return },
            };
            match request {
                Request::Apply {
                    text,
                    source,
                    wait,
                    reply,
                } => {
                    self.apply(text, source, wait, reply, &cancel).await;
                }
                Request::Rollback { reply } => {
                    let outcome = self.rollback("requested by an operator".into()).await;
                    let _ = reply.send(outcome);
                }
            }
        }
    }

    fn current(&self) -> &Version {
        self.history
            .back()
            .expect("the history always holds the running version")
    }

    fn publish(&self) {
        self.published
            .send_replace(self.history.iter().cloned().collect());
    }

    fn reject(&self, problems: Vec<Problem>) -> Outcome {
        let lines = problems.iter().map(|p| p.to_string()).collect();
        self.client.journal().append(
            None,
            None,
            Event::ConfigRejected { problems: lines },
            Cause::Config {
                version: self.current().version,
            },
        );
        Outcome::Rejected { problems }
    }

    /// What may not change without a restart, and what a rollout must wait for.
    fn start_only(&self, new: &Config) -> Vec<Problem> {
        let old = &self.current().config;
        let mut problems = Vec::new();
        let mut push = |path: &str, message: &str| {
            problems.push(Problem {
                path: path.into(),
                message: message.into(),
            });
        };
        if new.enclave != old.enclave {
            push(
                "enclave",
                "the [enclave] table is measured at start; changing it takes a restart",
            );
        }
        if new.storage != old.storage {
            push(
                "storage",
                "the [storage] table is read at start; changing it takes a restart",
            );
        }
        if new.cluster != old.cluster {
            push(
                "cluster",
                "the [cluster] table is read at start (its policy decides who gets the cluster \
                 key); changing it takes a restart",
            );
        }
        if new.runtime.listen != old.runtime.listen {
            push(
                "runtime.listen",
                "changing the listen address takes a restart",
            );
        }
        if new.runtime.data_dir != old.runtime.data_dir {
            push(
                "runtime.data_dir",
                "changing the data directory takes a restart",
            );
        }
        if new.runtime.monitor_interval != old.runtime.monitor_interval {
            push(
                "runtime.monitor_interval",
                "changing the monitor interval takes a restart",
            );
        }
        // The HTTP server's limits are set when it starts listening.
        let (n, o) = (&new.runtime, &old.runtime);
        for (key, changed) in [
            (
                "header_read_timeout",
                n.header_read_timeout != o.header_read_timeout,
            ),
            (
                "body_read_timeout",
                n.body_read_timeout != o.body_read_timeout,
            ),
            ("request_timeout", n.request_timeout != o.request_timeout),
            ("max_connections", n.max_connections != o.max_connections),
            (
                "max_connections_per_peer",
                n.max_connections_per_peer != o.max_connections_per_peer,
            ),
            ("reserved_fds", n.reserved_fds != o.reserved_fds),
        ] {
            if changed {
                push(
                    &format!("runtime.{key}"),
                    "the HTTP server's limits are set when it starts; changing them takes a restart",
                );
            }
        }
        if n.escalation_grace != o.escalation_grace {
            push(
                "runtime.escalation_grace",
                "the grace before an escalated runtime exits is read at start; changing it takes a restart",
            );
        }
        if n.metrics_auth != o.metrics_auth {
            push(
                "runtime.metrics_auth",
                "whether /metrics needs the admin token is set when the server starts; changing it takes a restart",
            );
        }
        if n.log_format != o.log_format {
            push(
                "runtime.log_format",
                "the log format is set when the process starts; changing it takes a restart",
            );
        }
        if n.admin_token_file != o.admin_token_file {
            push(
                "runtime.admin_token_file",
                "the admin token is read when the process starts; changing its file takes a restart",
            );
        }
        if new.testing != old.testing {
            push(
                "testing",
                "the [testing] table (fault injection, synthetic services) takes a restart",
            );
        }
        let (_, was_disabled) = old.resolve(&self.catalog);
        let (_, now_disabled) = new.resolve(&self.catalog);
        for name in was_disabled.difference(&now_disabled) {
            problems.push(Problem {
                path: format!("services.{name}.enabled"),
                message: format!("{name} was disabled at start; enabling it takes a restart"),
            });
        }
        problems
    }

    fn held(&self) -> Vec<Problem> {
        let anomalies: Vec<ActiveAnomaly> = self.client.anomalies().borrow().clone();
        anomalies
            .iter()
            .filter(|a| a.action == crate::anomaly::AnomalyAction::HoldRollout)
            .map(|a| Problem {
                path: format!("services.{}", a.service),
                message: format!(
                    "rollouts are held while the {} anomaly on {} lasts ({:.3}, baseline {:.3})",
                    a.signal, a.service, a.evidence.value, a.evidence.baseline
                ),
            })
            .collect()
    }

    async fn apply(
        &mut self,
        text: String,
        source: Source,
        wait: bool,
        reply: oneshot::Sender<Outcome>,
        cancel: &CancellationToken,
    ) {
        let new = match Config::parse(&text, &self.catalog) {
            Ok(mut c) => {
                (self.overrides)(&mut c);
                c
            }
            Err(invalid) => {
                let _ = reply.send(self.reject(invalid.problems));
                return;
            }
        };
        let mut problems = self.start_only(&new);
        problems.extend(self.held());
        if !problems.is_empty() {
            let _ = reply.send(self.reject(problems));
            return;
        }
        let digest = hash(&text);
        if digest == self.current().hash {
            let _ = reply.send(Outcome::Unchanged {
                version: self.current().version,
            });
            return;
        }
        let version = self.next_version;
        let (specs, disabled) = new.resolve(&self.catalog);
        // Read before applying, so everything the change causes falls inside the watch.
        let baseline = self.client.readiness().borrow().level;
        let since = self.client.journal().last_seq();
        let changed = match self
            .client
            .reconfigure(specs, disabled, Cause::Config { version })
            .await
        {
            Ok(changed) => changed
                .into_iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            Err(e) => {
                let _ = reply.send(self.reject(vec![Problem {
                    path: "services".into(),
                    message: e.to_string(),
                }]));
                return;
            }
        };
        self.next_version += 1;
        self.client.journal().append(
            None,
            None,
            Event::ConfigApplied {
                version,
                hash: digest.clone(),
                changed: changed.clone(),
            },
            Cause::Config { version },
        );
        self.history.push_back(Version {
            version,
            hash: digest.clone(),
            applied_at: SystemTime::now(),
            source,
            status: Status::Watching,
            text: Arc::from(text),
            config: Arc::new(new),
        });
        while self.history.len() > KEPT {
            self.history.pop_front();
        }
        self.publish();
        let applied = Outcome::Applied {
            version,
            hash: digest,
            changed,
            watching: !wait,
        };
        let mut reply = Some(reply);
        if !wait && let Some(r) = reply.take() {
            let _ = r.send(applied.clone());
        }
        let trouble = tokio::select! {
            () = cancel.cancelled() => return,
            t = self.watch(since, baseline) => t,
        };
        let outcome = match trouble {
            Some(reason) => self.rollback(reason).await,
            None => {
                if let Some(v) = self.history.back_mut() {
                    v.status = Status::Good;
                }
                self.publish();
                self.client.journal().append(
                    None,
                    None,
                    Event::ConfigConfirmed { version },
                    Cause::Config { version },
                );
                match applied {
                    Outcome::Applied {
                        version,
                        hash,
                        changed,
                        ..
                    } => Outcome::Applied {
                        version,
                        hash,
                        changed,
                        watching: false,
                    },
                    other => other,
                }
            }
        };
        if let Some(r) = reply.take() {
            let _ = r.send(outcome);
        }
    }

    /// Watches the journal for the watch window; returns why things got worse, if they did: a failure,
    /// an anomaly or a crash loop at once, worse readiness if it lasts to the end of the window.
    async fn watch(&self, since: u64, baseline: RuntimeLevel) -> Option<String> {
        let journal = self.client.journal();
        let rank = |l: RuntimeLevel| match l {
            RuntimeLevel::Ready => 0,
            RuntimeLevel::Degraded => 1,
            RuntimeLevel::NotReady => 2,
        };
        let mut reason = None;
        journal
            .wait_for(since, self.watch_window, |e| {
                let service = e
                    .service
                    .as_ref()
                    .map_or("runtime".to_owned(), |s| s.to_string());
                reason = match &e.event {
                    Event::Exited { outcome, .. } if outcome.is_failure() => Some(format!(
                        "{service} failed: {}",
                        serde_json::to_string(outcome).unwrap_or_default()
                    )),
                    Event::Failed { reason } => Some(format!("{service} failed: {reason}")),
                    Event::Anomaly {
                        signal, evidence, ..
                    } => Some(format!(
                        "anomaly on {service}: {signal} is {:.3}, baseline {:.3}",
                        evidence.value, evidence.baseline
                    )),
                    Event::CrashLoop { failure, .. } => {
                        Some(format!("{service} is in a crash loop ({failure})"))
                    }
                    _ => None,
                };
                reason.is_some()
            })
            .await;
        if reason.is_some() {
            return reason;
        }
        // Readiness is judged at the end of the window: a restart the change itself needed makes a
        // service briefly not ready, which is expected; still being worse off at the end is not.
        let now = self.client.readiness().borrow().clone();
        (rank(now.level) > rank(baseline)).then(|| {
            format!(
                "the runtime is {:?} at the end of the watch window (was {baseline:?}): {}",
                now.level,
                now.reasons.join("; ")
            )
        })
    }

    /// Applies the last good version before the running one's content again.
    async fn rollback(&mut self, reason: String) -> Outcome {
        let from = self.current().version;
        let Some(target) = rollback_target(&self.history).cloned() else {
            return self.reject(vec![Problem {
                path: String::new(),
                message: format!(
                    "no earlier good version to roll back to: every version kept before \
                     version {from} has its configuration or was rolled back from"
                ),
            }]);
        };
        let (specs, disabled) = target.config.resolve(&self.catalog);
        if let Err(e) = self
            .client
            .reconfigure(
                specs,
                disabled,
                Cause::Config {
                    version: target.version,
                },
            )
            .await
        {
            return self.reject(vec![Problem {
                path: String::new(),
                message: e.to_string(),
            }]);
        }
        if let Some(v) = self.history.back_mut() {
            v.status = Status::RolledBack;
        }
        self.client.journal().append(
            None,
            None,
            Event::ConfigRolledBack {
                from,
                to: target.version,
                reason: reason.clone(),
            },
            Cause::Config {
                version: target.version,
            },
        );
        let version = self.next_version;
        self.next_version += 1;
        self.history.push_back(Version {
            version,
            applied_at: SystemTime::now(),
            source: Source::Rollback,
            status: Status::Good,
            ..target.clone()
        });
        while self.history.len() > KEPT {
            self.history.pop_front();
        }
        self.publish();
        Outcome::RolledBack {
            from,
            to: target.version,
            reason,
        }
    }
}

/// The version a rollback returns to: walking back from the running version, the newest one marked
/// good whose content is neither the running one's nor one already rolled back from. A rollback
/// applies an earlier version again as a new version, so its copies are passed over too, and each
/// rollback goes one good content further back instead of landing on the same one again.
fn rollback_target(history: &VecDeque<Version>) -> Option<&Version> {
    let mut left: Vec<&str> = Vec::new();
    for v in history.iter().rev() {
        if v.status == Status::RolledBack || left.is_empty() {
            left.push(&v.hash);
            continue;
        }
        if v.status == Status::Good && !left.contains(&v.hash.as_str()) {
            return Some(v);
        }
    }
    None
}
