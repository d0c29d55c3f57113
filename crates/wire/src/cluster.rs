//! The cluster (docs/cluster.md): `GET /v1/cluster`, `POST /v1/cluster/init`, and the admission
//! exchange, `POST /v1/cluster/challenge` then `POST /v1/cluster/join`. Binary fields are base64
//! (standard alphabet, padded); digests and identities are lowercase hex.

use serde::{Deserialize, Serialize};

/// `GET /v1/cluster`: the cluster this node's database belongs to, this node, and the members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// The node that answered (also in every answer's `x-cloister-node` header).
    pub node: String,
    /// Whether this node holds the cluster key (sealed in its data directory).
    pub member: bool,
    /// The check value of the key this node holds (hex); equal to `cluster.key_check` for a
    /// member. Absent when it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
    /// The cluster recorded in the database; absent before `cloister cluster init`, and on a
    /// node whose storage is not PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Every node registered in the database, by node id.
    pub members: Vec<Member>,
}

/// The cluster's record in the database: never its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cluster {
    /// 16 random bytes, hex.
    pub id: String,
    /// The admission policy it was created with (JSON, as `policy` in docs/cluster.md).
    pub policy: serde_json::Value,
    /// HMAC-SHA256(cluster key, "cloister cluster key check v1" 0x00 || id bytes), hex.
    pub key_check: String,
    /// The node that created it.
    pub created_by: String,
    /// When, as the database's clock says (RFC 3339).
    pub created_at: String,
    /// The cluster key's generation: 1, and one more at each `cloister cluster rotate`.
    #[serde(default = "first_generation")]
    pub generation: u64,
}

fn first_generation() -> u64 {
    1
}

/// A node registered in the cluster's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// Its node id.
    pub node: String,
    /// Its platform (`simulation` or `gramine`).
    pub platform: String,
    /// MRENCLAVE, hex.
    pub measurement: String,
    /// MRSIGNER, hex.
    pub signer: String,
    /// ISVPRODID.
    pub product_id: u16,
    /// ISVSVN.
    pub security_version: u16,
    /// Its API address, as it gave it.
    pub address: String,
    /// Cloister's version on it.
    pub version: String,
    /// The check value of the key it holds, hex.
    pub key_check: String,
    /// The generation of the key it holds (0: registered before generations were recorded).
    #[serde(default)]
    pub generation: u64,
    /// When it registered first (RFC 3339, database clock).
    pub joined_at: String,
    /// Its last heartbeat (RFC 3339, database clock).
    pub last_heartbeat: String,
    /// Milliseconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: u64,
}

/// `POST /v1/cluster/init`: the cluster just created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Initialized {
    /// The new cluster's id, hex.
    pub id: String,
    /// The check value of its key, hex.
    pub key_check: String,
    /// The node that created it and holds its key.
    pub node: String,
    /// The admission policy, as recorded.
    pub policy: serde_json::Value,
}

/// `DELETE /v1/cluster/members/{node}`: a node removed from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Removed {
    /// The node removed.
    pub node: String,
    /// Whether it was a registered member (false: only its id is refused from now on).
    pub was_member: bool,
    /// The member that recorded the removal.
    pub removed_by: String,
}

/// `POST /v1/cluster/rotate`: the cluster key rotated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rotated {
    /// The member that rotated it.
    pub node: String,
    /// The new key's generation.
    pub generation: u64,
    /// The new key's check value, hex.
    pub key_check: String,
    /// The members the new key was sealed to (this one among them).
    pub granted: Vec<String>,
    /// The members left out, and why: each must join again.
    pub skipped: Vec<Skipped>,
    /// How many of the crypto service's keys were re-wrapped under the new key.
    pub rewrapped: u64,
    /// The keys that could not be re-wrapped because they do not open (`owner/id: why`).
    pub unreadable: Vec<String>,
}

/// A member a rotation left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Skipped {
    /// Its node id.
    pub node: String,
    /// Why.
    pub reason: String,
}

/// `POST /v1/cluster/challenge`: a member's challenge, to be bound into the joiner's quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Challenge {
    /// 40 bytes, base64: expiry (8, big-endian Unix seconds) || random (16) || tag (16).
    pub challenge: String,
    /// The member that made it.
    pub node: String,
}

/// `POST /v1/cluster/join`: a node asking for the cluster key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The member's challenge, as it was given (base64).
    pub challenge: String,
    /// The joiner's ephemeral X25519 public key, 32 bytes, base64.
    pub public_key: String,
    /// The joiner's quote (base64), whose report data is
    /// SHA-256("cloister cluster join request v1" 0x00 || challenge || public_key) || 32 zeros.
    pub quote: String,
    /// The joiner's node id (for the journal; not evidence).
    #[schema(max_length = 64)]
    pub node: String,
    /// The joiner's API address (for the journal; not evidence).
    #[schema(max_length = 256)]
    pub address: String,
}

/// The member's answer: the cluster key encrypted to the joiner's ephemeral key, and the member's
/// own quote binding this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinAnswer {
    /// The cluster's id, hex (16 bytes).
    pub cluster_id: String,
    /// The member's node id.
    pub node: String,
    /// The member's ephemeral X25519 public key, 32 bytes, base64.
    pub public_key: String,
    /// The cluster key, AES-256-GCM under the exchange's key, 48 bytes (32 + tag), base64.
    pub wrapped_key: String,
    /// The member's quote (base64), whose report data is SHA-256("cloister cluster join answer
    /// v1" 0x00 || the request's report data (64) || cluster id (16) || public_key (32) ||
    /// wrapped_key (48)) || 32 zeros.
    pub quote: String,
    /// True when the member runs on the simulation platform and admitted a simulation quote:
    /// nothing in this exchange was backed by hardware.
    pub simulation: bool,
}
