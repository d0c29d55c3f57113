//! The cluster key's rotation (docs/cluster.md, "Rotating the cluster key"): a new key, sealed in
//! the database to each member's own static key (`grant.rs`), the cluster's record moved to it in
//! the same transaction, and every key of the crypto service re-wrapped under it, while every
//! member goes on serving; each takes its grant with `Node::follow`.

use crate::db::Plan;
use crate::grant::{check_member_tag, grant};
use crate::keys::Held;
use crate::node::Node;
use crate::sealed::{self, Sealed};
use crate::{ClusterKey, Error};

/// How many keys one query of a re-wrap reads.
const REWRAP_BATCH: i64 = 256;

impl Node {
    /// Rotates the cluster key: a new key of the next generation, sealed to every member that is
    /// not removed and whose static key carries a valid tag; the cluster's record moved to it in
    /// the same transaction; this node's key file replaced; then every key of the crypto service
    /// re-wrapped under it. Members go on serving throughout: a member reading a re-wrapped key,
    /// or writing one, takes its grant first.
    pub async fn rotate(&self) -> Result<wire::cluster::Rotated, Error> {
        // A node that holds no key (every node on redb) has nothing to rotate: 409, as for a
        // removal, before the 501 of a node without PostgreSQL.
        let before = self.current()?;
        let db = self.db()?;
        // Whatever an interrupted rotation left wrapped by the previous key first: after this
        // one, nobody holds that key any more.
        let mut rewrapped = self.rewrap(&before).await?;
        let writing = self.writing.lock().await;
        let held = self.current()?;
        let generation = held.generation + 1;
        let new = ClusterKey::random();
        let mut skipped = Vec::new();
        let plan = db
            .rotate(held.generation, |members| {
                let mut grants = Vec::new();
                for m in members {
                    let public = m.key.as_deref().and_then(|k| <[u8; 32]>::try_from(k).ok());
                    let reason = match (public, &m.tag) {
                        (None, _) | (_, None) => Some("it registered no member key".to_owned()),
                        (Some(_), _) if m.generation != held.generation => Some(format!(
                            "it registered under generation {} of the key, not {}",
                            m.generation, held.generation
                        )),
                        (Some(public), Some(tag))
                            if !check_member_tag(
                                &held.key,
                                &held.id,
                                held.generation,
                                &m.node,
                                &public,
                                tag,
                            ) =>
                        {
                            Some("its member key's tag does not verify".to_owned())
                        }
                        _ => None,
                    };
                    match (reason, public) {
                        (None, Some(public)) => grants.push((
                            m.node.clone(),
                            grant(&held.key, &held.id, generation, &m.node, &public, &new)?,
                        )),
                        (reason, _) => skipped.push(wire::cluster::Skipped {
                            node: m.node.clone(),
                            reason: reason.unwrap_or_default(),
                        }),
                    }
                }
                Ok(Plan {
                    key_check: new.check(&held.id),
                    grants,
                })
            })
            .await?;
        let next = Held::new(Sealed {
            id: held.id,
            key: new,
            generation,
            previous: Some(ClusterKey::from_bytes(*held.key.bytes())),
        });
        // The database holds this node's grant too: a failure here is repaired by taking it.
        sealed::replace(self.platform.as_ref(), &self.dir, &next.sealed())?;
        self.hold(next)?;
        drop(writing);
        for s in &skipped {
            tracing::warn!(node = %s.node, reason = %s.reason, generation, "a member was left out of the rotation: it must join again");
        }
        if let Err(e) = self.register().await {
            tracing::warn!(error = %e, "registering the rotated key failed; the next heartbeat tries again");
        }
        rewrapped += self.rewrap(&*self.current()?).await?;
        Ok(wire::cluster::Rotated {
            node: self.id.clone(),
            generation,
            key_check: hex::encode(plan.key_check),
            granted: plan.grants.into_iter().map(|(node, _)| node).collect(),
            skipped,
            rewrapped: rewrapped.moved,
            unreadable: rewrapped.unreadable,
        })
    }

    /// Re-wraps every key wrapped by a generation before `held`'s, in one pass over them: after a
    /// rotation's record is written no key is written under an older generation, so one pass
    /// leaves none. A key that does not open is left as it is and named.
    async fn rewrap(&self, held: &Held) -> Result<Rewrapped, Error> {
        let db = self.db()?;
        let mut done = Rewrapped::default();
        let mut after = (String::new(), String::new());
        loop {
            let rows = db.keys_below(held.generation, &after, REWRAP_BATCH).await?;
            let Some((owner, row)) = rows.last() else {
                return Ok(done);
            };
            after = (owner.clone(), row.id.clone());
            for (owner, row) in rows {
                let name = format!("{owner}/{}", row.id);
                let Some(wrap) = held.wrap_of(row.generation) else {
                    done.unreadable.push(format!(
                        "{name}: wrapped by generation {}, which this node does not hold",
                        row.generation
                    ));
                    continue;
                };
                let entry = match wrap.open(&owner, row.clone()) {
                    Ok(entry) => entry,
                    Err(e) => {
                        done.unreadable.push(format!("{name}: {e}"));
                        continue;
                    }
                };
                let sealed = held
                    .wrap
                    .seal(&owner, &row.id, row.revision, &entry.record)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                if db.rewrap(&owner, &row, held.generation, &sealed).await? {
                    done.moved += 1;
                }
            }
        }
    }
}

/// What a re-wrap did.
#[derive(Debug, Default)]
struct Rewrapped {
    moved: u64,
    unreadable: Vec<String>,
}

impl std::ops::AddAssign for Rewrapped {
    fn add_assign(&mut self, other: Rewrapped) {
        self.moved += other.moved;
        self.unreadable.extend(other.unreadable);
    }
}
