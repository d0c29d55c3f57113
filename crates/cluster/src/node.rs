//! This node's part in the cluster: its id (`DATA_DIR/node.id`), the cluster key it holds (sealed
//! in `DATA_DIR/cluster.key`), and what it does with them: create the cluster, answer a
//! challenge, admit a joiner, join through a member, and register and heartbeat in the database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use enclave::quote::{ReportBody, Trust};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wire::cluster::{Challenge, Initialized, JoinAnswer, JoinRequest, Status};

use crate::db::{Db, NodeRow, Record};
use crate::exchange::{self, ClusterId, ClusterKey, Ephemeral};
use crate::{Error, Policy, sealed};

/// How often a member moves its heartbeat in the database.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The node id's file in the data directory.
const NODE_ID_FILE: &str = "node.id";
/// The longest node id and address a join request may carry.
const MAX_NODE_ID: usize = 64;
const MAX_ADDRESS: usize = runtime::config::MAX_ADDRESS_LEN;

/// What [`Node::open`] needs.
#[derive(Debug)]
pub struct Options<'a> {
    /// The enclave platform: it seals the key and makes the quotes.
    pub platform: Arc<dyn enclave::Platform>,
    /// The data directory.
    pub data_dir: &'a Path,
    /// `[cluster]`.
    pub config: &'a runtime::config::ClusterConfig,
    /// The storage database, when storage is on PostgreSQL: a cluster lives there.
    pub database: Option<&'a storage::postgres::Target>,
    /// This node's API address, as members and operators reach it.
    pub address: String,
    /// Cloister's version.
    pub version: &'a str,
}

/// The cluster key this node holds.
struct Held {
    id: ClusterId,
    key: ClusterKey,
    check: [u8; 32],
}

/// This node in its cluster (or a node of no cluster, on redb or before `cluster init`).
pub struct Node {
    id: String,
    platform: Arc<dyn enclave::Platform>,
    policy: Policy,
    dir: PathBuf,
    db: Option<Db>,
    address: String,
    version: String,
    held: watch::Sender<Option<Arc<Held>>>,
    /// The cluster's keys for the crypto service, once this node holds the cluster key.
    vault: watch::Sender<Option<Arc<dyn crypto::Vault>>>,
    /// Init and join each write the key file once: one at a time.
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("policy", &self.policy)
            .field("member", &self.is_member())
            .finish_non_exhaustive()
    }
}

/// A join that was admitted: the answer, and what the journal says about it.
#[derive(Debug, Clone)]
pub struct Admission {
    /// What the joiner gets.
    pub answer: JoinAnswer,
    /// The joiner's identity, as its quote proved it.
    pub identity: ReportBody,
}

/// The joiner's state between its request and the member's answer.
#[derive(Debug)]
pub struct Joining {
    ephemeral: Ephemeral,
    report_data: [u8; 64],
    /// What to send to the member.
    pub request: JoinRequest,
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Invalid(format!("{field} is not base64: {e}")))
}

fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn vault_of(db: &Db, held: &Held) -> Arc<dyn crypto::Vault> {
    Arc::new(crate::vault::KeyVault::new(db.clone(), held.id, &held.key))
}

/// The node's id: `DATA_DIR/node.id`, made once (16 random bytes, hex).
fn node_id(dir: &Path) -> Result<String, Error> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty()
                || id.len() > MAX_NODE_ID
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(Error::Internal(format!(
                    "{} is damaged: a node id is 1 to {MAX_NODE_ID} letters, digits and dashes",
                    path.display()
                )));
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = hex::encode(rand::random::<[u8; 8]>());
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(Error::Internal(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

impl Node {
    /// This node: its id (made on first start), its policy, the key it holds if any, and the
    /// database. A key that is not the database's cluster's is refused here.
    pub async fn open(o: Options<'_>) -> Result<Node, Error> {
        let id = node_id(o.data_dir)?;
        let policy = Policy::resolve(o.config.policy, o.platform.identity());
        let held = sealed::load(o.platform.as_ref(), o.data_dir)?.map(|(id, key)| {
            let check = key.check(&id);
            Arc::new(Held { id, key, check })
        });
        let db = match o.database {
            Some(target) => Some(Db::connect(target).await?),
            None => None,
        };
        if let (Some(db), Some(held)) = (&db, &held) {
            match db.cluster().await? {
                None => {
                    return Err(Error::ForeignKey(format!(
                        "this node holds the key of cluster {}, and the database records no \
                         cluster: it is another database, or one restored from before the \
                         cluster was made",
                        held.id
                    )));
                }
                Some(record)
                    if record.id != held.id.to_string() || record.key_check != held.check =>
                {
                    return Err(Error::ForeignKey(format!(
                        "this node holds the key of cluster {}, and the database belongs to \
                         cluster {}: point it at its own cluster's database, or give it a new \
                         data directory and have it join",
                        held.id, record.id
                    )));
                }
                Some(_) => {}
            }
        }
        let id_removed = match &db {
            Some(db) => db.is_removed(&id).await?,
            None => false,
        };
        if id_removed {
            if held.is_some() {
                sealed::remove(o.data_dir);
            }
            return Err(Error::Removed(id));
        }
        let vault = match (&db, &held) {
            (Some(db), Some(held)) => Some(vault_of(db, held)),
            _ => None,
        };
        Ok(Node {
            id,
            platform: o.platform,
            policy,
            dir: o.data_dir.to_owned(),
            db,
            address: o.address,
            version: o.version.to_owned(),
            held: watch::Sender::new(held),
            vault: watch::Sender::new(vault),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The cluster's keys, for the crypto service (`crypto::Crypto::shared`): none until this
    /// node holds the cluster key, then the vault in the database.
    pub fn vault(&self) -> crypto::VaultWatch {
        self.vault.subscribe()
    }

    /// Holds the cluster key from now on, and hands the vault it opens to the crypto service.
    fn hold(&self, held: Held) -> Result<(), Error> {
        let held = Arc::new(held);
        self.vault.send_replace(Some(vault_of(self.db()?, &held)));
        self.held.send_replace(Some(held));
        Ok(())
    }

    /// The node id (also in every answer's `x-cloister-node` header).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The resolved admission policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether this node holds the cluster key.
    pub fn is_member(&self) -> bool {
        self.held.borrow().is_some()
    }

    /// The cluster this node's key belongs to.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.held.borrow().as_ref().map(|h| h.id)
    }

    /// Whether this node runs on the simulation platform (and so admits simulation quotes).
    pub fn simulation(&self) -> bool {
        self.platform.identity().platform == enclave::PlatformKind::Simulation
    }

    fn db(&self) -> Result<&Db, Error> {
        self.db.as_ref().ok_or(Error::NotPostgres)
    }

    /// The cluster recorded in the database (none before `cluster init`).
    pub async fn recorded(&self) -> Result<Option<String>, Error> {
        Ok(self.db()?.cluster().await?.map(|r| r.id))
    }

    fn held(&self) -> Result<Arc<Held>, Error> {
        self.held.borrow().clone().ok_or(Error::NotMember)
    }

    /// What `GET /v1/cluster` answers.
    pub async fn status(&self) -> Result<Status, Error> {
        let held = self.held.borrow().clone();
        let (cluster, members) = match &self.db {
            None => (None, Vec::new()),
            Some(db) => (db.cluster().await?.map(to_wire), db.members().await?),
        };
        Ok(Status {
            node: self.id.clone(),
            member: held.is_some(),
            key_check: held.map(|h| hex::encode(h.check)),
            cluster,
            members,
        })
    }

    /// Makes the cluster: a new key sealed here, then the cluster's row (refused if there is
    /// one), then this node's row.
    pub async fn init(&self) -> Result<Initialized, Error> {
        let db = self.db()?;
        let _writing = self.writing.lock().await;
        if let Some(held) = self.held.borrow().as_ref() {
            return Err(Error::Exists(held.id.to_string()));
        }
        if let Some(record) = db.cluster().await? {
            return Err(Error::Exists(record.id));
        }
        let (id, key) = (ClusterId::random(), ClusterKey::random());
        let check = key.check(&id);
        let policy = self.policy.to_json();
        sealed::store(self.platform.as_ref(), &self.dir, &id, &key)?;
        let created = db
            .create(&id.to_string(), &policy.to_string(), &check, &self.id)
            .await;
        match created {
            Ok(true) => {}
            Ok(false) => {
                sealed::remove(&self.dir);
                let other = db.cluster().await?.map(|r| r.id).unwrap_or_default();
                return Err(Error::Exists(other));
            }
            Err(e) => {
                sealed::remove(&self.dir);
                return Err(e);
            }
        }
        self.hold(Held { id, key, check })?;
        self.register().await?;
        Ok(Initialized {
            id: id.to_string(),
            key_check: hex::encode(check),
            node: self.id.clone(),
            policy,
        })
    }

    async fn register(&self) -> Result<(), Error> {
        let held = self.held()?;
        self.db()?
            .register(&NodeRow {
                node: &self.id,
                identity: self.platform.identity(),
                address: &self.address,
                version: &self.version,
                key_check: &held.check,
            })
            .await
    }

    /// A challenge for a joiner, good for `exchange::CHALLENGE_LIFETIME_SECS`.
    pub fn challenge(&self) -> Result<Challenge, Error> {
        let held = self.held()?;
        Ok(Challenge {
            challenge: b64_encode(&exchange::challenge(&held.key, now_secs())),
            node: self.id.clone(),
        })
    }

    async fn quote(&self, report_data: [u8; 64]) -> Result<Vec<u8>, Error> {
        let platform = self.platform.clone();
        tokio::task::spawn_blocking(move || platform.quote(&report_data))
            .await
            .map_err(|e| Error::Internal(format!("the quote's task: {e}")))?
            .map_err(|e| Error::Internal(format!("this node cannot make a quote: {e}")))
    }

    /// Checks a peer's quote: it verifies (a simulation quote only on a simulation node), binds
    /// `report_data`, and shows an identity the policy admits.
    fn verify(&self, quote: &[u8], report_data: &[u8; 64]) -> Result<ReportBody, Error> {
        let trust = Trust {
            allow_simulation: self.simulation(),
            hardware: None,
        };
        let (quote, _) =
            enclave::quote::check(quote, &trust, Some(report_data)).map_err(Error::quote)?;
        self.policy
            .admits(&quote.body, self.platform.identity().debug)?;
        Ok(quote.body)
    }

    /// A member's side: checks a join request and answers with the cluster key wrapped to the
    /// joiner's ephemeral key and a quote binding the answer.
    pub async fn admit(&self, request: &JoinRequest) -> Result<Admission, Error> {
        let held = self.held()?;
        if request.node.is_empty() || request.node.len() > MAX_NODE_ID {
            return Err(Error::Invalid(format!(
                "node must be 1 to {MAX_NODE_ID} characters"
            )));
        }
        if request.address.len() > MAX_ADDRESS {
            return Err(Error::Invalid(format!(
                "address must be at most {MAX_ADDRESS} characters"
            )));
        }
        if self.db()?.is_removed(&request.node).await? {
            return Err(Error::Removed(request.node.clone()));
        }
        let challenge = b64("challenge", &request.challenge)?;
        exchange::check_challenge(&held.key, &challenge, now_secs())?;
        let joiner = exchange::public_key(&b64("public_key", &request.public_key)?)?;
        let quote = b64("quote", &request.quote)?;
        let request_data = exchange::request_report_data(&challenge, &joiner);
        let identity = self.verify(&quote, &request_data)?;
        let wrapped = exchange::wrap(&held.key, &held.id, &joiner)?;
        let answer_data = exchange::answer_report_data(
            &request_data,
            &held.id,
            &wrapped.member,
            &wrapped.wrapped,
        );
        let own_quote = self.quote(answer_data).await?;
        Ok(Admission {
            answer: JoinAnswer {
                cluster_id: held.id.to_string(),
                node: self.id.clone(),
                public_key: b64_encode(&wrapped.member),
                wrapped_key: b64_encode(&wrapped.wrapped),
                quote: b64_encode(&own_quote),
                simulation: self.simulation(),
            },
            identity,
        })
    }

    /// A joiner's side, first half: an ephemeral key pair and a quote binding it with the
    /// member's challenge.
    pub async fn begin_join(&self, challenge: &Challenge) -> Result<Joining, Error> {
        let bytes = b64("challenge", &challenge.challenge)?;
        if bytes.len() != exchange::CHALLENGE_LEN {
            return Err(Error::BadAnswer(format!(
                "the member's challenge is {} bytes, expected {}",
                bytes.len(),
                exchange::CHALLENGE_LEN
            )));
        }
        let ephemeral = Ephemeral::new();
        let report_data = exchange::request_report_data(&bytes, ephemeral.public());
        let quote = self.quote(report_data).await?;
        let request = JoinRequest {
            challenge: challenge.challenge.clone(),
            public_key: b64_encode(ephemeral.public()),
            quote: b64_encode(&quote),
            node: self.id.clone(),
            address: self.address.clone(),
        };
        Ok(Joining {
            ephemeral,
            report_data,
            request,
        })
    }

    /// A joiner's side, second half: checks the member's quote (it binds this answer to this
    /// request, and the policy admits the member), opens the key, checks it against the
    /// database's record, seals it here and registers this node.
    pub async fn finish_join(
        &self,
        joining: Joining,
        answer: &JoinAnswer,
    ) -> Result<ClusterId, Error> {
        let db = self.db()?;
        let bad = |what: &str| Error::BadAnswer(what.to_owned());
        let id = ClusterId::parse(&answer.cluster_id)
            .ok_or_else(|| bad("cluster_id is not 32 hex digits"))?;
        let member: [u8; 32] = b64("public_key", &answer.public_key)?
            .try_into()
            .map_err(|_| bad("public_key is not 32 bytes"))?;
        let wrapped = b64("wrapped_key", &answer.wrapped_key)?;
        let quote = b64("quote", &answer.quote)?;
        let expected = exchange::answer_report_data(&joining.report_data, &id, &member, &wrapped);
        self.verify(&quote, &expected)?;
        let key = joining.ephemeral.unwrap(&id, &member, &wrapped)?;
        let check = key.check(&id);
        let record = db.cluster().await?.ok_or_else(|| {
            Error::BadAnswer(format!(
                "the member answered for cluster {id}, and the database records no cluster"
            ))
        })?;
        if record.id != id.to_string() || record.key_check != check {
            return Err(Error::KeyCheck {
                received: hex::encode(check),
                recorded: hex::encode(&record.key_check),
            });
        }
        let _writing = self.writing.lock().await;
        if self.is_member() {
            return Err(Error::Exists(id.to_string()));
        }
        sealed::store(self.platform.as_ref(), &self.dir, &id, &key)?;
        self.hold(Held { id, key, check })?;
        self.register().await?;
        Ok(id)
    }

    /// Keeps this node's row fresh while it is a member: a heartbeat every [`HEARTBEAT`], the row
    /// written again if it went missing. Waits to become a member first; ends when `cancel` is.
    pub async fn keep_membership(&self, cancel: CancellationToken) -> Membership {
        let Some(db) = self.db.as_ref() else {
            return Membership::Ended;
        };
        let mut member = self.held.subscribe();
        tokio::select! {
            became = async { member.wait_for(Option::is_some).await.is_ok() } => if !became { return Membership::Ended },
            () = cancel.cancelled() => return Membership::Ended,
        }
        // Written again at each start: the address or the version may have changed.
        let mut registered = false;
        loop {
            // A removed node gives up the key before anything else: it is no member any more.
            if let Ok(true) = db.is_removed(&self.id).await {
                self.give_up_key();
                return Membership::Removed;
            }
            let result = if registered {
                match db.heartbeat(&self.id).await {
                    Ok(true) => Ok(()),
                    Ok(false) => self.register().await,
                    Err(e) => Err(e),
                }
            } else {
                self.register().await
            };
            match result {
                Ok(()) => registered = true,
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster heartbeat failed; the next one tries again");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = cancel.cancelled() => return Membership::Ended,
            }
        }
    }

    /// Removes `node` from the cluster: it may not join again, and, running, it gives up the key
    /// and stops at its next heartbeat. A node does not remove itself: ask another member.
    pub async fn remove(&self, node: &str) -> Result<wire::cluster::Removed, Error> {
        self.held()?;
        if node == self.id {
            return Err(Error::Refused(format!(
                "node {node} is the node answering: a node does not remove itself; ask another \
                 member to remove it"
            )));
        }
        if node.is_empty() || node.len() > MAX_NODE_ID {
            return Err(Error::Invalid(format!(
                "node must be 1 to {MAX_NODE_ID} characters"
            )));
        }
        let was_member = self.db()?.remove_node(node, &self.id).await?;
        Ok(wire::cluster::Removed {
            node: node.to_owned(),
            was_member,
            removed_by: self.id.clone(),
        })
    }

    /// Erases the sealed cluster key and holds none from now on.
    fn give_up_key(&self) {
        sealed::remove(&self.dir);
        self.held.send_replace(None);
        tracing::error!(
            node = %self.id,
            "this node was removed from the cluster: its cluster key is erased, and it stops"
        );
    }
}

/// How [`Node::keep_membership`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Shutdown, or no cluster to be a member of.
    Ended,
    /// This node was removed from the cluster: it gave up the key, and must stop serving.
    Removed,
}

fn to_wire(r: Record) -> wire::cluster::Cluster {
    wire::cluster::Cluster {
        policy: serde_json::from_str(&r.policy).unwrap_or(serde_json::Value::String(r.policy)),
        id: r.id,
        key_check: hex::encode(r.key_check),
        created_by: r.created_by,
        created_at: r.created_at,
    }
}

#[cfg(test)]
mod tests {
    use enclave::Platform as _;
    use runtime::Classify as _;

    use super::*;

    /// A node on "hardware": the simulation's keys and quotes under an identity that says Gramine
    /// and not debug, which is all `verify` asks of its own platform.
    #[derive(Debug)]
    struct Hardware(enclave::Simulation, enclave::Identity);

    impl enclave::Platform for Hardware {
        fn identity(&self) -> &enclave::Identity {
            &self.1
        }
        fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, enclave::Error> {
            self.0.quote(report_data)
        }
        fn sealing_key(
            &self,
            request: &enclave::KeyRequest,
        ) -> Result<enclave::SealingKey, enclave::Error> {
            self.0.sealing_key(request)
        }
    }

    fn node(platform: Arc<dyn enclave::Platform>, dir: &Path) -> Node {
        Node {
            id: "n".into(),
            policy: Policy::resolve(
                runtime::config::ClusterPolicy::Measurement,
                platform.identity(),
            ),
            platform,
            dir: dir.to_owned(),
            db: None,
            address: String::new(),
            version: String::new(),
            held: watch::Sender::new(None),
            vault: watch::Sender::new(None),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    #[test]
    fn a_hardware_member_refuses_simulation_quotes_and_cannot_yet_verify_hardware_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"code", b"config", 1).expect("sim");
        let quote = sim.quote(&[5; 64]).expect("quote");
        let identity = enclave::Identity {
            platform: enclave::PlatformKind::Gramine,
            debug: false,
            ..sim.identity().clone()
        };
        let other = tempfile::tempdir().expect("tempdir");
        let hardware = node(
            Arc::new(Hardware(
                enclave::Simulation::open(other.path(), b"code", b"config", 1).expect("sim"),
                identity,
            )),
            dir.path(),
        );
        let refused = hardware.verify(&quote, &[5; 64]).expect_err("refused");
        assert_eq!(refused.code(), "cluster.simulation_refused", "{refused}");

        // The same quote without its simulation marks is a hardware quote to the verifier: no
        // collateral, so unsupported, never accepted.
        let mut unmarked = quote.clone();
        unmarked[12..48].fill(0);
        let refused = hardware.verify(&unmarked, &[5; 64]).expect_err("refused");
        assert_eq!(refused.code(), "cluster.hardware_unsupported", "{refused}");

        // A simulation member admits it, having the same measurement, and only with its binding.
        let simulation = node(Arc::new(sim), dir.path());
        assert!(simulation.verify(&quote, &[5; 64]).is_ok());
        let refused = simulation.verify(&quote, &[6; 64]).expect_err("refused");
        assert_eq!(refused.code(), "cluster.report_data_mismatch", "{refused}");
    }
}
