//! The cluster (docs/cluster.md): its status and creation for the operator, and the two calls of
//! the admission exchange, which need no token (a node that joins has none: its quote is checked).

use reqwest::Method;
use wire::cluster::{Challenge, Initialized, JoinAnswer, JoinRequest, Removed, Rotated, Status};

use crate::client::Client;
use crate::error::Error;

impl Client {
    /// `GET /v1/cluster`: the cluster, this node and the members (admin token).
    pub async fn cluster(&self) -> Result<Status, Error> {
        self.call(Method::GET, "/v1/cluster").await
    }

    /// `POST /v1/cluster/init`: makes the cluster on this node (admin token); once per database.
    pub async fn cluster_init(&self) -> Result<Initialized, Error> {
        self.call(Method::POST, "/v1/cluster/init").await
    }

    /// `POST /v1/cluster/rotate`: a new cluster key, handed to every member and re-wrapping
    /// every key (admin token).
    pub async fn cluster_rotate(&self) -> Result<Rotated, Error> {
        self.call(Method::POST, "/v1/cluster/rotate").await
    }

    /// `DELETE /v1/cluster/members/{node}`: removes a node from the cluster (admin token).
    pub async fn cluster_remove(&self, node: &str) -> Result<Removed, Error> {
        let path = format!(
            "/v1/cluster/members/{}",
            crate::client::segment(node, false)
        );
        self.call(Method::DELETE, &path).await
    }

    /// `POST /v1/cluster/challenge`: a member's challenge for a joiner's quote.
    pub async fn cluster_challenge(&self) -> Result<Challenge, Error> {
        self.call(Method::POST, "/v1/cluster/challenge").await
    }

    /// `POST /v1/cluster/join`: asks a member for the cluster key.
    pub async fn cluster_join(&self, request: &JoinRequest) -> Result<JoinAnswer, Error> {
        self.call_with(Method::POST, "/v1/cluster/join", request)
            .await
    }
}
