//! This node's part in the cluster: its id (`DATA_DIR/node.id`), the cluster key it holds (sealed
//! in `DATA_DIR/cluster.key`), and what it does with them: create the cluster, answer a
//! challenge, admit a joiner, join through a member, and register and heartbeat in the database.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wire::cluster::{Initialized, Status};

use crate::db::{Db, NodeRow, Record};
use crate::exchange::{ClusterId, ClusterKey};
use crate::grant::{self, open_grant};
use crate::keys::{Held, Keyholder};
use crate::sealed::Sealed;
use crate::{Error, Policy, sealed};

/// How often a member moves its heartbeat in the database.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The node id's file in the data directory.
const NODE_ID_FILE: &str = "node.id";
/// The longest node id and address a join request may carry.
pub(crate) const MAX_NODE_ID: usize = 64;
pub(crate) const MAX_ADDRESS: usize = runtime::config::MAX_ADDRESS_LEN;

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
    /// Where Intel's collateral comes from (`[cluster] pccs`), to verify hardware quotes.
    pub collateral: Option<Arc<dyn crate::CollateralSource>>,
}

/// How this node verifies an SGX hardware quote: the collateral's source, and the TCB statuses it
/// accepts besides `UpToDate`.
#[derive(Debug)]
pub(crate) struct HardwareTrust {
    pub(crate) source: Arc<dyn crate::CollateralSource>,
    pub(crate) policy: enclave::dcap::TcbPolicy,
}

/// This node in its cluster (or a node of no cluster, on redb or before `cluster init`).
pub struct Node {
    pub(crate) id: String,
    pub(crate) platform: Arc<dyn enclave::Platform>,
    pub(crate) policy: Policy,
    pub(crate) dir: PathBuf,
    db: Option<Db>,
    pub(crate) address: String,
    version: String,
    pub(crate) held: watch::Sender<Option<Arc<Held>>>,
    /// The cluster's keys for the crypto service, once this node holds the cluster key.
    vault: watch::Sender<Option<Arc<dyn crypto::Vault>>>,
    /// Init, join, a rotation and taking a rotation's grant each write the key file: one at a
    /// time.
    pub(crate) writing: tokio::sync::Mutex<()>,
    /// This node's static key, to which rotations seal the new cluster key.
    pub(crate) member: x25519_dalek::StaticSecret,
    /// How hardware quotes are verified; `None`: they are refused (no `[cluster] pccs`).
    pub(crate) hardware: Option<HardwareTrust>,
    /// Seconds since the Unix epoch: the challenges' clock and the collateral's.
    pub(crate) clock: fn() -> u64,
    me: Weak<Node>,
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

/// Seconds since the Unix epoch, by the system clock.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
    /// database. A key that is not the database's cluster's is refused here; a key one rotation
    /// behind the database's is replaced by this node's grant of the new one.
    pub async fn open(o: Options<'_>) -> Result<Arc<Node>, Error> {
        let id = node_id(o.data_dir)?;
        let policy = Policy::resolve(o.config.policy, o.platform.identity());
        let member = grant::member_secret(o.platform.as_ref(), &id)?;
        let hardware = match o.collateral {
            Some(source) => {
                let mut allow = Vec::new();
                for name in &o.config.tcb_allow {
                    allow.push(name.parse::<enclave::dcap::TcbStatus>().map_err(|e| {
                        Error::Invalid(format!("[cluster] tcb_allow: {name:?}: {e}"))
                    })?);
                }
                Some(HardwareTrust {
                    source,
                    policy: enclave::dcap::TcbPolicy {
                        allow,
                        allow_debug: o.platform.identity().debug,
                    },
                })
            }
            None => None,
        };
        let held = sealed::load(o.platform.as_ref(), o.data_dir)?.map(|s| Arc::new(Held::new(s)));
        let db = match o.database {
            Some(target) => Some(Db::connect(target).await?),
            None => None,
        };
        let mut behind = false;
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
                Some(record) if record.id != held.id.to_string() => {
                    return Err(Error::ForeignKey(format!(
                        "this node holds the key of cluster {}, and the database belongs to \
                         cluster {}: point it at its own cluster's database, or give it a new \
                         data directory and have it join",
                        held.id, record.id
                    )));
                }
                Some(record) if record.generation == held.generation + 1 => behind = true,
                Some(record) if record.generation != held.generation => {
                    return Err(Error::ForeignKey(format!(
                        "this node holds generation {} of cluster {}'s key, and the database \
                         records generation {}: {}",
                        held.generation,
                        held.id,
                        record.generation,
                        if record.generation < held.generation {
                            "the database was restored from before a rotation"
                        } else {
                            "this node missed more than one rotation; move DATA_DIR/cluster.key \
                             away and start it with --join to be admitted again"
                        }
                    )));
                }
                Some(record) if record.key_check != held.check => {
                    return Err(Error::ForeignKey(format!(
                        "this node holds a key of cluster {} whose check value is not the \
                         database's: point it at its own cluster's database, or give it a new \
                         data directory and have it join",
                        held.id
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
        let node = Arc::new_cyclic(|me| Node {
            id,
            platform: o.platform,
            policy,
            dir: o.data_dir.to_owned(),
            vault: watch::Sender::new(match (&db, &held) {
                (Some(_), Some(_)) => Some(Arc::new(crate::vault::KeyVault::new(
                    me.clone() as Weak<dyn Keyholder>
                ))),
                _ => None,
            }),
            db,
            address: o.address,
            version: o.version.to_owned(),
            held: watch::Sender::new(held),
            writing: tokio::sync::Mutex::new(()),
            member,
            hardware,
            clock: now_secs,
            me: me.clone(),
        });
        if behind {
            node.take_grant().await?;
        }
        Ok(node)
    }

    /// A node of no cluster and no database, for tests.
    #[cfg(test)]
    pub(crate) fn bare(platform: Arc<dyn enclave::Platform>, dir: &Path) -> Node {
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
            member: x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng),
            hardware: None,
            clock: now_secs,
            me: Weak::new(),
        }
    }

    /// The cluster's keys, for the crypto service (`crypto::Crypto::shared`): none until this
    /// node holds the cluster key, then the vault in the database.
    pub fn vault(&self) -> crypto::VaultWatch {
        self.vault.subscribe()
    }

    /// Holds the cluster key from now on, and hands the vault it opens to the crypto service.
    pub(crate) fn hold(&self, held: Held) -> Result<(), Error> {
        self.db()?;
        self.held.send_replace(Some(Arc::new(held)));
        if self.vault.borrow().is_none() {
            let vault: Arc<dyn crypto::Vault> = Arc::new(crate::vault::KeyVault::new(
                self.me.clone() as Weak<dyn Keyholder>,
            ));
            self.vault.send_replace(Some(vault));
        }
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

    pub(crate) fn db(&self) -> Result<&Db, Error> {
        self.db.as_ref().ok_or(Error::NotPostgres)
    }

    /// The cluster recorded in the database (none before `cluster init`).
    pub async fn recorded(&self) -> Result<Option<String>, Error> {
        Ok(self.db()?.cluster().await?.map(|r| r.id))
    }

    /// The key this node holds now.
    pub(crate) fn current(&self) -> Result<Arc<Held>, Error> {
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
        let held = Held::new(Sealed {
            id: ClusterId::random(),
            key: ClusterKey::random(),
            generation: 1,
            previous: None,
        });
        let (id, check) = (held.id, held.check);
        let policy = self.policy.to_json();
        sealed::store(self.platform.as_ref(), &self.dir, &held.sealed())?;
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
        self.hold(held)?;
        self.register().await?;
        Ok(Initialized {
            id: id.to_string(),
            key_check: hex::encode(check),
            node: self.id.clone(),
            policy,
        })
    }

    pub(crate) async fn register(&self) -> Result<(), Error> {
        let held = self.current()?;
        let member_key = x25519_dalek::PublicKey::from(&self.member).to_bytes();
        let member_tag =
            grant::member_tag(&held.key, &held.id, held.generation, &self.id, &member_key);
        self.db()?
            .register(&NodeRow {
                node: &self.id,
                identity: self.platform.identity(),
                address: &self.address,
                version: &self.version,
                key_check: &held.check,
                generation: held.generation,
                member_key: &member_key,
                member_tag: &member_tag,
            })
            .await
    }

    /// Takes this node's grant of the cluster key one generation past the one it holds (another
    /// member rotated it): opens it, checks it against the database's check value, seals it here
    /// with the key before it, and registers again with a tag under it.
    pub(crate) async fn take_grant(&self) -> Result<(), Error> {
        let db = self.db()?;
        let _writing = self.writing.lock().await;
        let held = self.current()?;
        let record = db
            .cluster()
            .await?
            .ok_or_else(|| Error::Refused("the database records no cluster".into()))?;
        if record.generation <= held.generation {
            return Ok(());
        }
        if record.generation != held.generation + 1 {
            return Err(Error::ForeignKey(format!(
                "this node holds generation {} of the cluster key, and the database records \
                 generation {}: it missed more than one rotation; move DATA_DIR/cluster.key away \
                 and start it with --join to be admitted again",
                held.generation, record.generation
            )));
        }
        let grant = db
            .grant(record.generation, &self.id)
            .await?
            .ok_or(Error::NotGranted(record.generation))?;
        let key = open_grant(
            &held.key,
            &held.id,
            record.generation,
            &self.id,
            &self.member,
            &grant,
        )?;
        let check = key.check(&held.id);
        if check != record.key_check.as_slice() {
            return Err(Error::KeyCheck {
                received: hex::encode(check),
                recorded: hex::encode(&record.key_check),
            });
        }
        let next = Held::new(Sealed {
            id: held.id,
            key,
            generation: record.generation,
            previous: Some(ClusterKey::from_bytes(*held.key.bytes())),
        });
        sealed::replace(self.platform.as_ref(), &self.dir, &next.sealed())?;
        self.hold(next)?;
        tracing::info!(
            generation = record.generation,
            "this node took the rotated cluster key"
        );
        if let Err(e) = self.register().await {
            tracing::warn!(error = %e, "registering the rotated key failed; the next heartbeat tries again");
        }
        Ok(())
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
            // A rotation on another member: this node takes its grant of the new key.
            if let (Ok(Some(record)), Ok(held)) = (db.cluster().await, self.current())
                && record.generation > held.generation
                && let Err(e) = self.take_grant().await
            {
                tracing::error!(error = %e, "this node cannot take the rotated cluster key");
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
        self.current()?;
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

impl Keyholder for Node {
    fn current(&self) -> Result<Arc<Held>, Error> {
        Node::current(self)
    }

    fn db(&self) -> Result<&Db, Error> {
        Node::db(self)
    }

    fn follow(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(self.take_grant())
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
        generation: r.generation,
    }
}
