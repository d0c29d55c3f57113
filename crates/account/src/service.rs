//! The account service itself: the recipe ([`Account`]) with its settings, the records as stored,
//! and one incarnation's [`State`], which holds every account and publishes the gate's directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use runtime::clock::now_ms;
use runtime::id::new_id;
use runtime::journal::{Cause, Event};
use runtime::setting::Setting;
use runtime::{CallError, Context, Journal, Kind, Priority, Service, ServiceError, Spec};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::gate::{Grant, digest};
use crate::{
    AccountInfo, Addresses, Created, Directory, Error, Gate, IssuedToken, NAME, Principal, Rate,
    Request, Scope, TokenGrant, TokenInfo, neo_n3,
};

/// The storage namespace holding account records.
const NAMESPACE: &str = "@account";
const RECORD_PREFIX: &str = "account/";

/// Requests per second an account may make, on average (in `[services.account]`).
pub const RATE_PER_SECOND: Setting<u32> = Setting::new(
    "rate_per_second",
    100,
    1,
    1_000_000,
    "requests per second an account may make, on average",
);
/// Requests an account may make at once after being idle.
pub const RATE_BURST: Setting<u32> = Setting::new(
    "rate_burst",
    200,
    1,
    1_000_000,
    "requests an account may make at once after being idle",
);
/// The most live tokens one account may hold.
pub const MAX_TOKENS: Setting<usize> = Setting::new(
    "max_tokens_per_account",
    100,
    1,
    10_000,
    "most live tokens per account",
);

const MAX_NAME_CHARS: usize = 64;
/// On a shared database, how often the records are read again for what other nodes changed
/// (`Account::shared`): the longest an account, token or disable made elsewhere goes unseen here.
pub const SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// An account as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: String,
    name: String,
    created_ms: u64,
    disabled: bool,
    signing_key: String,
    public_key: String,
    neo_n3: String,
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: String,
    name: String,
    /// Hex SHA-256 of the secret.
    digest: String,
    scopes: Vec<Scope>,
    created_ms: u64,
    expires_ms: Option<u64>,
}

impl Record {
    fn info(&self) -> AccountInfo {
        AccountInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            created_ms: self.created_ms,
            disabled: self.disabled,
            signing_key: self.signing_key.clone(),
            public_key: self.public_key.clone(),
            addresses: Addresses {
                neo_n3: self.neo_n3.clone(),
            },
            tokens: self.tokens.iter().filter(|t| t.is_live()).count(),
        }
    }
}

impl TokenRecord {
    fn is_live(&self) -> bool {
        self.expires_ms.is_none_or(|at| at > now_ms())
    }

    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        }
    }
}

/// The recipe.
#[derive(Debug)]
pub struct Account {
    crypto: crypto::Handle,
    storage: storage::Handle,
    journal: Journal,
    directory: watch::Sender<Arc<Directory>>,
    /// Other nodes of a cluster write the same records (storage on PostgreSQL).
    shared: bool,
}

impl Account {
    pub fn new(crypto: crypto::Handle, storage: storage::Handle, journal: Journal) -> Account {
        let rate = rate_of(&Account::default_spec());
        let (directory, _) = watch::channel(Arc::new(Directory::loading(rate)));
        Account {
            crypto: crypto.with_caller(&NAME),
            storage: storage.with_caller(&NAME),
            journal,
            directory,
            shared: false,
        }
    }

    /// Says other nodes of a cluster write the same records: the service reads again what they
    /// changed before each request and every [`SYNC_EVERY`], so an account, token or disable made
    /// through one node holds on every other within that time.
    pub fn shared(mut self, shared: bool) -> Account {
        self.shared = shared;
        self
    }

    /// The gate the HTTP API authenticates service requests with. It outlives restarts: while the
    /// service reloads, it answers [`AuthError::Loading`](crate::AuthError::Loading).
    pub fn gate(&self) -> Gate {
        Gate::new(self.directory.subscribe())
    }

    pub fn default_spec() -> Spec {
        Spec::new(NAME, Kind::Core)
            .description(
                "accounts, their API tokens and scopes, per-account signing keys and addresses, and the per-account rate limit",
            )
            .depends_on(crypto::NAME)
            .depends_on(storage::NAME)
            .priority(Priority::High)
            .capability("account.tokens")
            .capability("account.address.neo_n3")
            .setting(&RATE_PER_SECOND)
            .setting(&RATE_BURST)
            .setting(&MAX_TOKENS)
    }

    fn audit(&self, action: &str, subject: &str, detail: &[(&str, String)]) {
        self.journal.append(
            Some(&NAME),
            None,
            Event::Audit {
                action: action.into(),
                subject: subject.into(),
                detail: detail
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            },
            Cause::Service,
        );
    }
}

fn rate_of(spec: &Spec) -> Rate {
    Rate {
        per_second: f64::from(spec.get(&RATE_PER_SECOND)),
        burst: f64::from(spec.get(&RATE_BURST)),
    }
}

/// Crypto or storage did not answer while doing `what`.
fn unavailable(what: &'static str) -> impl FnOnce(CallError) -> Error {
    move |source| Error::Unavailable { what, source }
}

/// How many times a change to an account is applied again after another node changed the record
/// first, before the caller is told to retry.
const CHANGE_ATTEMPTS: u32 = 4;

/// What [`State::save`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Save {
    Saved,
    /// Another node changed the record since this one read it: nothing was written.
    Changed,
}

/// The storage key of account `id`'s record.
fn key_of(id: &str) -> String {
    format!("{RECORD_PREFIX}{id}")
}

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "cls_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn check_name(name: &str, what: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::BadInput(format!(
            "{what} must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::BadInput(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(name.to_owned())
}

/// One incarnation's state: every account, by id.
struct State<'a> {
    service: &'a Account,
    accounts: BTreeMap<String, Record>,
    /// The version of each record as last read or written, by storage key.
    versions: HashMap<String, u64>,
    max_tokens: usize,
    rate: Rate,
}

impl State<'_> {
    fn publish(&self) {
        let mut grants = std::collections::HashMap::new();
        for record in self.accounts.values() {
            for token in &record.tokens {
                let Ok(bytes) = hex::decode(&token.digest) else {
                    continue;
                };
                let Ok(digest) = <[u8; 32]>::try_from(bytes) else {
                    continue;
                };
                grants.insert(
                    digest,
                    Grant {
                        principal: Principal {
                            account: record.id.clone(),
                            token: token.id.clone(),
                            scopes: token.scopes.clone().into(),
                            signing_key: record.signing_key.clone(),
                            expires_ms: token.expires_ms,
                        },
                        expires_ms: token.expires_ms,
                        disabled: record.disabled,
                    },
                );
            }
        }
        self.service.directory.send_replace(Arc::new(Directory {
            loaded: true,
            grants,
            rate: self.rate,
        }));
    }

    fn record(&self, id: &str) -> Result<&Record, Error> {
        self.accounts.get(id).ok_or_else(|| Error::NoAccount {
            account: id.to_owned(),
        })
    }

    /// Writes `record` to storage over the version of it this node last read (none: a new
    /// account), so a change another node made in between is never overwritten: that answers
    /// [`Save::Changed`]. Only once written does it replace the one in memory and in the directory.
    async fn save(&mut self, record: Record) -> Result<Save, Error> {
        let value = serde_json::to_vec(&record)
            .map_err(|e| Error::Internal(format!("encoding account {}: {e}", record.id)))?;
        let key = key_of(&record.id);
        let current = self.versions.get(&key).copied();
        let saved = self
            .service
            .storage
            .call(|reply| storage::Request::PutIf {
                namespace: NAMESPACE.into(),
                key,
                value,
                current,
                reply,
            })
            .await
            .map_err(unavailable("saving the account"))?;
        let version = match saved {
            Ok(version) => version,
            Err(storage::Error::Changed { .. }) => return Ok(Save::Changed),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "saving account {}: {e}",
                    record.id
                )));
            }
        };
        self.versions.insert(key_of(&record.id), version);
        self.accounts.insert(record.id.clone(), record);
        self.publish();
        Ok(Save::Saved)
    }

    /// Applies `change` to account `id`'s record and saves it. When another node changed the
    /// record since this one read it, reads it again and applies `change` to what it finds, up to
    /// [`CHANGE_ATTEMPTS`] times: two nodes changing one account at once both take effect (a
    /// token issued through one while another disables the account leaves it disabled, with the
    /// token). `change` answers `None` when there is nothing to write.
    async fn modify<T>(
        &mut self,
        id: &str,
        mut change: impl FnMut(&mut Record) -> Result<Option<T>, Error>,
    ) -> Result<(Record, Option<T>), Error> {
        for _ in 0..CHANGE_ATTEMPTS {
            let mut record = self.record(id)?.clone();
            let Some(out) = change(&mut record)? else {
                return Ok((record, None));
            };
            match self.save(record.clone()).await? {
                Save::Saved => return Ok((record, Some(out))),
                Save::Changed => {
                    self.read_all().await.map_err(Error::Internal)?;
                    self.publish();
                }
            }
        }
        Err(Error::Changed {
            account: id.to_owned(),
            attempts: CHANGE_ATTEMPTS,
        })
    }

    async fn load(&mut self) -> Result<(), ServiceError> {
        self.read_all().await.map_err(ServiceError::new)?;
        self.publish();
        Ok(())
    }

    /// On a shared database: reads again each record another node changed (or made, or deleted)
    /// since this one last read it, and publishes the directory if anything changed. A failure is
    /// logged, and the directory stays as it was.
    async fn sync(&mut self) {
        if !self.service.shared {
            return;
        }
        match self.read_all().await {
            Ok(true) => self.publish(),
            Ok(false) => {}
            Err(e) => tracing::warn!("account: cannot read the cluster's accounts again: {e}"),
        }
    }

    /// Reads every record whose version is not the one read before; answers whether anything
    /// changed.
    async fn read_all(&mut self) -> Result<bool, String> {
        let mut after = None;
        let mut seen = HashMap::new();
        let mut changed = false;
        loop {
            let page = self
                .service
                .storage
                .call(|reply| storage::Request::List {
                    namespace: NAMESPACE.into(),
                    prefix: RECORD_PREFIX.into(),
                    after: after.clone(),
                    limit: 500,
                    reply,
                })
                .await
                .map_err(|e| format!("listing accounts: {e}"))?
                .map_err(|e| format!("listing accounts: {e}"))?;
            for listed in page.keys {
                let key = listed.key;
                if self.versions.get(&key) == Some(&listed.version) {
                    seen.insert(key, listed.version);
                    continue;
                }
                let value = self
                    .service
                    .storage
                    .call(|reply| storage::Request::Get {
                        namespace: NAMESPACE.into(),
                        key: key.clone(),
                        reply,
                    })
                    .await
                    .map_err(|e| format!("reading {key}: {e}"))?;
                let value = match value {
                    Ok(value) => value,
                    // Deleted through another node between the listing and the read.
                    Err(storage::Error::NotFound(_)) => continue,
                    Err(e) => return Err(format!("reading {key}: {e}")),
                };
                let record: Record = serde_json::from_slice(&value.data)
                    .map_err(|e| format!("the account record {key} is not valid: {e}"))?;
                seen.insert(key, value.version);
                self.accounts.insert(record.id.clone(), record);
                changed = true;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let before = self.accounts.len();
        self.accounts
            .retain(|id, _| seen.contains_key(&format!("{RECORD_PREFIX}{id}")));
        changed |= self.accounts.len() != before;
        self.versions = seen;
        Ok(changed)
    }

    async fn create(&mut self, name: String) -> Result<Created, Error> {
        let name = check_name(&name, "the account name")?;
        if self.accounts.values().any(|a| a.name == name) {
            return Err(Error::NameTaken(name));
        }
        let id = new_id("acc");
        let key = self
            .service
            .crypto
            .call(|reply| crypto::Request::Generate {
                owner: id.clone(),
                algorithm: crypto::Algorithm::P256,
                reply,
            })
            .await
            .map_err(unavailable("creating the signing key"))?
            .map_err(|e| Error::Internal(format!("creating the signing key: {e}")))?;
        let uncompressed = key
            .versions
            .last()
            .and_then(|v| hex::decode(&v.public_key).ok())
            .ok_or_else(|| Error::Internal("the new signing key has no public key".into()))?;
        let public = p256::PublicKey::from_sec1_bytes(&uncompressed)
            .map_err(|e| Error::Internal(format!("the new signing key's public key: {e}")))?;
        let compressed = {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            public.to_encoded_point(true).as_bytes().to_vec()
        };
        let neo = neo_n3(&compressed).map_err(|e| Error::Internal(e.to_string()))?;
        let key_id = key.id.clone();
        let (token, secret) = new_token(TokenGrant {
            name: "first".into(),
            scopes: vec![Scope::All],
            ttl: None,
            not_after: None,
        });
        let record = Record {
            id: id.clone(),
            name,
            created_ms: now_ms(),
            disabled: false,
            signing_key: key.id,
            public_key: hex::encode(&compressed),
            neo_n3: neo,
            tokens: vec![token.clone()],
        };
        let saved = match self.save(record.clone()).await {
            Ok(Save::Saved) => Ok(()),
            // An account id is new: a record there already is another node's, made with the same
            // random id, which is not to be overwritten.
            Ok(Save::Changed) => Err(Error::Internal(format!(
                "an account {id} exists already in storage"
            ))),
            Err(e) => Err(e),
        };
        if let Err(e) = saved {
            // Nothing refers to the new key: take it back rather than leave it orphaned.
            let removed = self
                .service
                .crypto
                .call(|reply| crypto::Request::Delete {
                    owner: id.clone(),
                    id: key_id,
                    reply,
                })
                .await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(account = %id, "account: could not delete the signing key of an account that was not saved");
            }
            return Err(e);
        }
        self.service.audit(
            "account.created",
            &id,
            &[
                ("name", record.name.clone()),
                ("signing_key", record.signing_key.clone()),
                ("neo_n3", record.neo_n3.clone()),
            ],
        );
        self.service.audit(
            "token.issued",
            &id,
            &[("token", token.id.clone()), ("scopes", "*".into())],
        );
        Ok(Created {
            account: record.info(),
            token: IssuedToken {
                info: token.info(),
                secret,
            },
        })
    }

    async fn set_disabled(&mut self, id: &str, disabled: bool) -> Result<AccountInfo, Error> {
        let (record, changed) = self
            .modify(id, |record| {
                Ok((record.disabled != disabled).then(|| record.disabled = disabled))
            })
            .await?;
        if changed.is_some() {
            let action = if disabled {
                "account.disabled"
            } else {
                "account.enabled"
            };
            self.service.audit(action, id, &[]);
        }
        Ok(record.info())
    }

    async fn issue(&mut self, id: &str, grant: TokenGrant) -> Result<IssuedToken, Error> {
        self.record(id)?;
        let name = check_name(&grant.name, "the token name")?;
        if grant.scopes.is_empty() {
            return Err(Error::BadInput(
                "a token needs at least one scope (`*` for everything)".into(),
            ));
        }
        let max_tokens = self.max_tokens;
        let grant = TokenGrant { name, ..grant };
        let (_, issued) = self
            .modify(id, |record| {
                let now = now_ms();
                // Expired tokens stop counting (and are dropped) when a new one is issued.
                record
                    .tokens
                    .retain(|t| t.expires_ms.is_none_or(|at| at > now));
                if record.tokens.len() >= max_tokens {
                    return Err(Error::TooManyTokens {
                        count: record.tokens.len(),
                        limit: max_tokens,
                        setting: MAX_TOKENS.name(),
                    });
                }
                let (token, secret) = new_token(grant.clone());
                record.tokens.push(token.clone());
                Ok(Some((token, secret)))
            })
            .await?;
        let (token, secret) =
            issued.ok_or_else(|| Error::Internal("a token issued and not saved".into()))?;
        let scopes = token
            .scopes
            .iter()
            .map(Scope::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut detail = vec![("token", token.id.clone()), ("scopes", scopes)];
        if let Some(at) = token.expires_ms {
            detail.push(("expires_ms", at.to_string()));
        }
        self.service.audit("token.issued", id, &detail);
        Ok(IssuedToken {
            info: token.info(),
            secret,
        })
    }

    async fn revoke(&mut self, id: &str, token: &str) -> Result<(), Error> {
        self.modify(id, |record| {
            let before = record.tokens.len();
            record.tokens.retain(|t| t.id != token);
            if record.tokens.len() == before {
                return Err(Error::NoToken {
                    account: id.to_owned(),
                    token: token.to_owned(),
                });
            }
            Ok(Some(()))
        })
        .await?;
        self.service
            .audit("token.revoked", id, &[("token", token.to_owned())]);
        Ok(())
    }

    /// Deletes the account's stored values and keys, then the account. A failure part way leaves
    /// the account in place (disabled), so the delete can be retried.
    async fn delete(&mut self, id: &str) -> Result<(), Error> {
        self.modify(id, |record| {
            Ok((!record.disabled).then(|| record.disabled = true))
        })
        .await?;
        let storage = &self.service.storage;
        // Its values and their namespace key, in one commit.
        storage
            .call(|reply| storage::Request::DropNamespace {
                namespace: id.to_owned(),
                reply,
            })
            .await
            .map_err(unavailable("deleting the account's values"))?
            .map_err(|e| Error::Internal(format!("deleting the account's values: {e}")))?;
        let crypto = &self.service.crypto;
        let keys = crypto
            .call(|reply| crypto::Request::List {
                owner: id.to_owned(),
                reply,
            })
            .await
            .map_err(unavailable("deleting the account's keys"))?
            .map_err(|e| Error::Internal(format!("listing the account's keys: {e}")))?;
        for key in keys {
            crypto
                .call(|reply| crypto::Request::Delete {
                    owner: id.to_owned(),
                    id: key.id.clone(),
                    reply,
                })
                .await
                .map_err(unavailable("deleting the account's keys"))?
                .map_err(|e| Error::Internal(format!("deleting key {}: {e}", key.id)))?;
        }
        storage
            .call(|reply| storage::Request::Delete {
                namespace: NAMESPACE.into(),
                key: format!("{RECORD_PREFIX}{id}"),
                reply,
            })
            .await
            .map_err(unavailable("deleting the account"))?
            .map_err(|e| Error::Internal(format!("deleting the account record: {e}")))?;
        self.accounts.remove(id);
        self.versions.remove(&key_of(id));
        self.publish();
        self.service.audit("account.deleted", id, &[]);
        Ok(())
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Create { name, reply } => reply.send(self.create(name).await),
            Request::Get { id, reply } => reply.send(self.record(&id).map(Record::info)),
            Request::List { reply } => {
                reply.send(Ok(self.accounts.values().map(Record::info).collect()))
            }
            Request::SetDisabled {
                id,
                disabled,
                reply,
            } => reply.send(self.set_disabled(&id, disabled).await),
            Request::Delete { id, reply } => reply.send(self.delete(&id).await),
            Request::IssueToken { id, grant, reply } => reply.send(self.issue(&id, grant).await),
            Request::Tokens { id, reply } => reply.send(
                self.record(&id)
                    .map(|r| r.tokens.iter().map(TokenRecord::info).collect()),
            ),
            Request::RevokeToken { id, token, reply } => reply.send(self.revoke(&id, &token).await),
        }
    }
}

fn new_token(grant: TokenGrant) -> (TokenRecord, String) {
    let secret = new_secret();
    let now = now_ms();
    let record = TokenRecord {
        id: new_id("tok"),
        name: grant.name,
        digest: hex::encode(digest(&secret)),
        scopes: grant.scopes,
        created_ms: now,
        expires_ms: {
            let by_ttl = grant
                .ttl
                .map(|ttl| now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)));
            match (by_ttl, grant.not_after) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        },
    };
    (record, secret)
}

impl Service for Account {
    type Request = Request;

    fn spec(&self) -> Spec {
        Account::default_spec()
    }

    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        if new.replicas.max > 1 {
            return Err("account has a single writer: replicas.max must be 1".into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let spec = cx.spec();
        let mut state = State {
            service: self,
            accounts: BTreeMap::new(),
            versions: HashMap::new(),
            max_tokens: spec.get(&MAX_TOKENS),
            rate: rate_of(&spec),
        };
        // Until the records are first read the gate answers "loading"; across a restart it keeps
        // the directory last published, which is what storage holds.
        state.load().await?;
        let mut specs = cx.spec_changes().clone();
        let mut resync = tokio::time::interval(SYNC_EVERY);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = cx.recv() => match request {
                    Some(request) => {
                        // Another node may have changed the account since: read it again first.
                        state.sync().await;
                        state.handle(request).await;
                    }
                    None => break,
                },
                _ = resync.tick(), if self.shared => state.sync().await,
                Ok(()) = specs.changed() => {
                    // Settings apply live, the rate limit included.
                    let spec = specs.borrow_and_update().clone();
                    state.max_tokens = spec.get(&MAX_TOKENS);
                    state.rate = rate_of(&spec);
                    state.publish();
                }
            }
        }
        Ok(())
    }
}
