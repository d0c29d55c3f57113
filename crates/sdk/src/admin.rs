//! The operator's side: services, the graph, the journal, configuration, accounts, attestation.

use reqwest::Method;
use runtime::Answer;
use wire::accounts::{
    AccountInfo, AccountList, CreateBody, Created, IssueBody, IssuedToken, TokenList,
};
use wire::attestation::Attestation;
use wire::config::{ApplyAnswer, History, VersionView};
use wire::events::EventPage;
use wire::services::{AnomalyList, BusView, GraphView, ServiceList, ServiceView};

use crate::client::{Client, segment};
use crate::error::Error;

/// How long a configuration apply that waits out its watch window may take.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// An operator's command to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start a stopped or failed service (its dependencies must be up).
    Start,
    /// Stop it (its dependents first).
    Stop,
    /// Restart it: a new incarnation.
    Restart,
}

impl Command {
    fn verb(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Stop => "stop",
            Command::Restart => "restart",
        }
    }
}

impl Client {
    /// `GET /v1/services`: the runtime's readiness and every service.
    pub async fn services(&self) -> Result<ServiceList, Error> {
        self.call(Method::GET, "/v1/services").await
    }

    /// `GET /v1/services/{name}`: one service (`service.not_found` if there is none).
    pub async fn service(&self, name: &str) -> Result<ServiceView, Error> {
        self.call(
            Method::GET,
            &format!("/v1/services/{}", segment(name, false)),
        )
        .await
    }

    /// `POST /v1/services/{name}/{start|stop|restart}`: what the service's state is now, and
    /// whether the command changed anything.
    pub async fn command(&self, name: &str, command: Command) -> Result<Answer, Error> {
        let path = format!("/v1/services/{}/{}", segment(name, false), command.verb());
        self.call(Method::POST, &path).await
    }

    /// `GET /v1/graph`: the dependency graph and its start layers.
    pub async fn graph(&self) -> Result<GraphView, Error> {
        self.call(Method::GET, "/v1/graph").await
    }

    /// `GET /v1/bus`: traffic, latency and breaker per caller -> callee edge, broadcasts, and the
    /// most recent dead letters.
    pub async fn bus(&self) -> Result<BusView, Error> {
        self.call(Method::GET, "/v1/bus").await
    }

    /// `GET /v1/anomalies`: the anomalies raised now, with their evidence and the action taken.
    pub async fn anomalies(&self) -> Result<AnomalyList, Error> {
        self.call(Method::GET, "/v1/anomalies").await
    }

    /// `GET /metrics`: the Prometheus text exposition (sent with the client's token, which the
    /// runtime asks for when `[runtime] metrics_auth` is on).
    pub async fn metrics(&self) -> Result<String, Error> {
        let (request, url) = self.request(Method::GET, "/metrics");
        let answer = self.send(request, url).await?;
        if !answer.status.is_success() {
            return Err(answer.error());
        }
        String::from_utf8(answer.body).map_err(|e| Error::Decode {
            url: answer.url,
            source: serde::de::Error::custom(format!("not UTF-8: {e}")),
        })
    }

    /// `GET /v1/events`: up to `limit` journal entries after sequence number `since`.
    pub async fn events(&self, since: u64, limit: usize) -> Result<EventPage, Error> {
        self.call(
            Method::GET,
            &format!("/v1/events?since={since}&limit={limit}"),
        )
        .await
    }

    /// `GET /v1/config`: the running configuration version, its TOML text and what it parsed into.
    pub async fn config(&self) -> Result<VersionView, Error> {
        self.call(Method::GET, "/v1/config").await
    }

    /// `GET /v1/config/versions/{version}`: one kept version.
    pub async fn config_version(&self, version: u64) -> Result<VersionView, Error> {
        self.call(Method::GET, &format!("/v1/config/versions/{version}"))
            .await
    }

    /// `GET /v1/config/history`: the kept versions, newest first.
    pub async fn config_history(&self) -> Result<History, Error> {
        self.call(Method::GET, "/v1/config/history").await
    }

    /// `PUT /v1/config`: applies a whole TOML configuration. A rejection is an answer, not an
    /// error: its outcome is `Rejected` with every problem (and `error` says `config.rejected`).
    /// With `wait`, answers after the watch window, so a rollback shows in the answer.
    pub async fn apply_config(
        &self,
        toml: impl Into<String>,
        wait: bool,
    ) -> Result<ApplyAnswer, Error> {
        let (request, url) = self.request(Method::PUT, &format!("/v1/config?wait={wait}"));
        let mut request = request
            .header(reqwest::header::CONTENT_TYPE, "application/toml")
            .body(toml.into());
        if wait {
            request = request.timeout(APPLY_WAIT);
        }
        outcome(self.send(request, url).await?)
    }

    /// `POST /v1/config/rollback`: applies the version before the running one again.
    pub async fn rollback_config(&self) -> Result<ApplyAnswer, Error> {
        let (request, url) = self.request(Method::POST, "/v1/config/rollback");
        outcome(self.send(request, url).await?)
    }

    /// `POST /v1/accounts` (admin): a new account and its first token, whose secret is shown only
    /// here.
    pub async fn create_account(&self, name: &str) -> Result<Created, Error> {
        let body = CreateBody {
            name: name.to_owned(),
        };
        self.call_with(Method::POST, "/v1/accounts", &body).await
    }

    /// `GET /v1/accounts` (admin): every account.
    pub async fn accounts(&self) -> Result<AccountList, Error> {
        self.call(Method::GET, "/v1/accounts").await
    }

    /// `GET /v1/accounts/{id}`: one account (`me`: the caller's own).
    pub async fn account(&self, id: &str) -> Result<AccountInfo, Error> {
        self.call(Method::GET, &format!("/v1/accounts/{}", segment(id, false)))
            .await
    }

    /// `POST /v1/accounts/{id}/disable` (admin): its tokens are refused until it is enabled.
    pub async fn disable_account(&self, id: &str) -> Result<AccountInfo, Error> {
        let path = format!("/v1/accounts/{}/disable", segment(id, false));
        self.call(Method::POST, &path).await
    }

    /// `POST /v1/accounts/{id}/enable` (admin): its tokens are accepted again.
    pub async fn enable_account(&self, id: &str) -> Result<AccountInfo, Error> {
        let path = format!("/v1/accounts/{}/enable", segment(id, false));
        self.call(Method::POST, &path).await
    }

    /// `DELETE /v1/accounts/{id}` (admin): the account, its values, keys, jobs and tokens.
    pub async fn delete_account(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/accounts/{}", segment(id, false));
        self.call_empty(Method::DELETE, &path).await
    }

    /// `POST /v1/accounts/{id}/tokens`: a new token, with at most the caller's scopes; its secret
    /// is shown only here.
    pub async fn issue_token(&self, id: &str, token: &IssueBody) -> Result<IssuedToken, Error> {
        let path = format!("/v1/accounts/{}/tokens", segment(id, false));
        self.call_with(Method::POST, &path, token).await
    }

    /// `GET /v1/accounts/{id}/tokens`: the account's tokens, never their secrets.
    pub async fn tokens(&self, id: &str) -> Result<TokenList, Error> {
        let path = format!("/v1/accounts/{}/tokens", segment(id, false));
        self.call(Method::GET, &path).await
    }

    /// `DELETE /v1/accounts/{id}/tokens/{token_id}`: the token stops working at once.
    pub async fn revoke_token(&self, id: &str, token_id: &str) -> Result<(), Error> {
        let path = format!(
            "/v1/accounts/{}/tokens/{}",
            segment(id, false),
            segment(token_id, false)
        );
        self.call_empty(Method::DELETE, &path).await
    }

    /// `GET /v1/attestation?nonce=HEX`: the enclave's identity and a quote binding `nonce` (1 to
    /// 64 bytes). Check the quote yourself: nothing in the JSON around it is evidence.
    pub async fn attestation(&self, nonce: &[u8]) -> Result<Attestation, Error> {
        let path = format!("/v1/attestation?nonce={}", hex::encode(nonce));
        self.call(Method::GET, &path).await
    }
}

/// An apply's or rollback's answer: an outcome (also with 422, a rejection), or the API's error.
fn outcome(answer: crate::client::Answer) -> Result<ApplyAnswer, Error> {
    if answer.status.is_success() {
        return answer.decode();
    }
    if answer.status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
        && let Ok(rejected) = answer.decode::<ApplyAnswer>()
    {
        return Ok(rejected);
    }
    Err(answer.error())
}
