//! The account service through its handle and gate, with crypto and storage on the simulation
//! platform: tokens resolve, expire and are refused when disabled; everything survives a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use account::{Account, AuthError, Error, Request, Scope, TokenGrant};
use runtime::{Builder, Journal, RuntimeLevel};

struct Fixture {
    rt: runtime::Runtime,
    account: account::Handle,
    gate: account::Gate,
    crypto: crypto::Handle,
    storage: storage::Handle,
    journal: Journal,
}

async fn start(dir: &Path) -> Fixture {
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation"));
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let crypto = b.add(crypto::Crypto::new(dir, platform.clone()));
    let storage = b.add(storage::Storage::new(dir, platform, crypto.clone()));
    let service = Account::new(crypto.clone(), storage.clone(), journal.clone());
    let gate = service.gate();
    let account = b.add(service);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    Fixture {
        rt,
        account,
        gate,
        crypto,
        storage,
        journal,
    }
}

async fn ask<T: Send + 'static>(
    f: &Fixture,
    make: impl FnOnce(runtime::Reply<Result<T, Error>>) -> Request,
) -> Result<T, Error> {
    f.account
        .call(make)
        .await
        .expect("the account service answers")
}

/// Creates the account `name`: the account and its first token.
async fn create(f: &Fixture, name: &str) -> account::Created {
    ask(f, |reply| Request::Create {
        name: name.into(),
        reply,
    })
    .await
    .expect("created")
}

#[tokio::test]
async fn tokens_resolve_expire_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let created = create(&f, "alice").await;
    let id = created.account.id.clone();
    let first = created.token.secret.clone();
    let principal = f.gate.authenticate(&first).expect("the first token works");
    assert_eq!(principal.account, id);
    assert_eq!(principal.signing_key, created.account.signing_key);
    assert!(principal.allows(account::Area::Storage, "put"));
    assert_eq!(
        f.gate.authenticate("cls_not-a-token"),
        Err(AuthError::Unknown)
    );

    // A token that expires at once is refused as expired (not unknown), by name.
    let expired = ask(&f, |reply| Request::IssueToken {
        id: id.clone(),
        grant: TokenGrant {
            name: "brief".into(),
            scopes: vec![Scope::parse("storage:get").expect("scope")],
            ttl: Some(Duration::ZERO),
            not_after: None,
        },
        reply,
    })
    .await
    .expect("issued");
    assert_eq!(
        f.gate.authenticate(&expired.secret),
        Err(AuthError::Expired {
            token: expired.info.id.clone()
        })
    );
    let lasting = ask(&f, |reply| Request::IssueToken {
        id: id.clone(),
        grant: TokenGrant {
            name: "reader".into(),
            scopes: vec![Scope::parse("storage:get").expect("scope")],
            ttl: Some(Duration::from_secs(3600)),
            not_after: None,
        },
        reply,
    })
    .await
    .expect("issued");
    let reader = f.gate.authenticate(&lasting.secret).expect("valid");
    assert!(reader.allows(account::Area::Storage, "get"));
    assert!(!reader.allows(account::Area::Storage, "put"));

    ask(&f, |reply| Request::SetDisabled {
        id: id.clone(),
        disabled: true,
        reply,
    })
    .await
    .expect("disabled");
    assert_eq!(
        f.gate.authenticate(&first),
        Err(AuthError::Disabled {
            account: id.clone()
        })
    );
    ask(&f, |reply| Request::SetDisabled {
        id: id.clone(),
        disabled: false,
        reply,
    })
    .await
    .expect("enabled");
    f.rt.shutdown().await;

    // A new process: the same accounts, tokens and addresses, read back from sealed storage.
    let f = start(dir.path()).await;
    let principal = f
        .gate
        .authenticate(&first)
        .expect("still valid after a restart");
    assert_eq!(principal.account, id);
    assert!(f.gate.authenticate(&lasting.secret).is_ok());
    let again = ask(&f, |reply| Request::Get {
        id: id.clone(),
        reply,
    })
    .await
    .expect("the account is still there");
    assert_eq!(again.addresses, created.account.addresses);
    assert_eq!(again.public_key, created.account.public_key);
    let tokens = ask(&f, |reply| Request::Tokens {
        id: id.clone(),
        reply,
    })
    .await
    .expect("tokens");
    // Issuing `reader` dropped the expired token.
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| t.id != expired.info.id), "{tokens:?}");
    assert_eq!(
        ask(&f, |reply| Request::Get {
            id: "acc_nobody".into(),
            reply,
        })
        .await,
        Err(Error::NoAccount {
            account: "acc_nobody".into()
        })
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn the_token_limit_is_enforced_and_names_its_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let created = create(&f, "many").await;
    let limit = Account::default_spec().get(&account::MAX_TOKENS);
    for n in 1..limit {
        ask(&f, |reply| Request::IssueToken {
            id: created.account.id.clone(),
            grant: TokenGrant {
                name: format!("t{n}"),
                scopes: vec![Scope::All],
                ttl: None,
                not_after: None,
            },
            reply,
        })
        .await
        .expect("under the limit");
    }
    let refused = ask(&f, |reply| Request::IssueToken {
        id: created.account.id.clone(),
        grant: TokenGrant {
            name: "one too many".into(),
            scopes: vec![Scope::All],
            ttl: None,
            not_after: None,
        },
        reply,
    })
    .await
    .expect_err("over the limit");
    assert_eq!(
        refused,
        Error::TooManyTokens {
            count: limit,
            limit,
            setting: account::MAX_TOKENS.name()
        }
    );
    assert!(refused.to_string().contains("max_tokens_per_account"));
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_deleted_account_leaves_no_values_keys_or_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let created = create(&f, "leaving").await;
    let id = created.account.id.clone();
    f.storage
        .call(|reply| storage::Request::Put {
            namespace: id.clone(),
            key: "note".into(),
            value: b"private".to_vec(),
            reply,
        })
        .await
        .expect("call")
        .expect("put");
    let stay = create(&f, "staying").await;

    ask(&f, |reply| Request::Delete {
        id: id.clone(),
        reply,
    })
    .await
    .expect("deleted");
    assert_eq!(
        f.gate.authenticate(&created.token.secret),
        Err(AuthError::Unknown)
    );
    let page = f
        .storage
        .call(|reply| storage::Request::List {
            namespace: id.clone(),
            prefix: String::new(),
            after: None,
            limit: 10,
            reply,
        })
        .await
        .expect("call")
        .expect("list");
    assert!(page.keys.is_empty(), "{page:?}");
    let keys = f
        .crypto
        .call(|reply| crypto::Request::List {
            owner: id.clone(),
            reply,
        })
        .await
        .expect("call")
        .expect("list");
    assert!(keys.is_empty(), "{keys:?}");
    // The other account is untouched.
    assert!(f.gate.authenticate(&stay.token.secret).is_ok());
    assert!(matches!(
        ask(&f, |reply| Request::Get { id, reply }).await,
        Err(Error::NoAccount { .. })
    ));
    f.rt.shutdown().await;
}

#[tokio::test]
async fn the_rate_limit_follows_the_configuration_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    // The default burst (200) admits a quick handful.
    for _ in 0..5 {
        assert!(f.gate.admit("acc_a").is_ok());
    }
    let mut spec = Account::default_spec();
    spec.set(&account::RATE_BURST, 1);
    spec.set(&account::RATE_PER_SECOND, 1);
    let mut published = f.gate.clone();
    f.rt.client()
        .reconfigure(
            vec![spec],
            Default::default(),
            runtime::journal::Cause::Operator {
                command: "test".into(),
            },
        )
        .await
        .expect("applied live");
    // The service republishes its directory with the new limit; wait for that, not for time.
    published.changed().await;
    assert!(
        f.gate.admit("acc_b").is_ok(),
        "a new account starts with a full bucket of 1"
    );
    let wait = f
        .gate
        .admit("acc_b")
        .expect_err("the second request in a burst of 1");
    assert!(
        wait <= Duration::from_secs(1) && wait > Duration::ZERO,
        "{wait:?}"
    );
    f.rt.shutdown().await;
}

/// Token secrets are never stored or logged: the account records as storage holds them (decrypted,
/// as the account service reads them back) and every journal entry carry the token's SHA-256 and its
/// id, never the secret it was issued with.
#[tokio::test]
async fn token_secrets_are_never_stored_or_journaled() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let created = create(&f, "alice").await;
    let issued = ask(&f, |reply| Request::IssueToken {
        id: created.account.id.clone(),
        grant: TokenGrant {
            name: "reader".into(),
            scopes: vec![Scope::parse("storage:get").expect("scope")],
            ttl: None,
            not_after: None,
        },
        reply,
    })
    .await
    .expect("issued");
    let secrets = [created.token.secret.clone(), issued.secret.clone()];

    let page = f
        .storage
        .call(|reply| storage::Request::List {
            namespace: "@account".into(),
            prefix: String::new(),
            after: None,
            limit: 100,
            reply,
        })
        .await
        .expect("storage answers")
        .expect("listed");
    assert!(!page.keys.is_empty(), "the account records are in storage");
    let mut stored = String::new();
    for listed in &page.keys {
        let value = f
            .storage
            .call(|reply| storage::Request::Get {
                namespace: "@account".into(),
                key: listed.key.clone(),
                reply,
            })
            .await
            .expect("storage answers")
            .expect("read");
        stored.push_str(&String::from_utf8_lossy(&value.data));
    }
    let journal: String = f
        .journal
        .read(0, usize::MAX)
        .expect("journal")
        .iter()
        .map(|e| serde_json::to_string(&**e).expect("json"))
        .collect();
    for secret in &secrets {
        let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
        assert!(stored.contains(&digest), "the record keeps the digest");
        assert!(!stored.contains(secret.as_str()), "a secret is stored");
        assert!(!journal.contains(secret.as_str()), "a secret is journaled");
    }
    assert!(
        journal.contains(&issued.info.id),
        "the audit names the token by id"
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn account_names_are_unique_until_the_account_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let create = |name: &'static str| {
        ask(&f, move |reply| Request::Create {
            name: name.into(),
            reply,
        })
    };
    let alice = create("alice").await.expect("created");
    // The name as stored (trimmed) is what counts.
    assert_eq!(
        create(" alice ").await.map(|c| c.account.id),
        Err(Error::NameTaken("alice".into()))
    );
    let others = ask(&f, |reply| Request::List { reply })
        .await
        .expect("listed");
    assert_eq!(others.len(), 1, "nothing was created: {others:?}");
    create("bob").await.expect("another name is free");
    ask(&f, |reply| Request::Delete {
        id: alice.account.id.clone(),
        reply,
    })
    .await
    .expect("deleted");
    let again = create("alice")
        .await
        .expect("a deleted account's name is free");
    assert_ne!(again.account.id, alice.account.id);
    f.rt.shutdown().await;
}

/// Another node of a cluster disables the account (its write lands in storage, which this node
/// has not read yet); this node then issues a token from what it had in memory. The token is
/// issued over the other node's change, not over the stale record: the account stays disabled.
#[tokio::test]
async fn a_change_made_through_another_node_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path()).await;
    let created = create(&f, "alice").await;
    let id = created.account.id.clone();

    // The other node's write: the same record, disabled, straight into storage.
    let key = format!("account/{id}");
    let stored = f
        .storage
        .call(|reply| storage::Request::Get {
            namespace: "@account".into(),
            key: key.clone(),
            reply,
        })
        .await
        .expect("storage answers")
        .expect("the record");
    let mut record: serde_json::Value = serde_json::from_slice(&stored.data).expect("json");
    assert_eq!(record["disabled"], false);
    record["disabled"] = serde_json::Value::Bool(true);
    f.storage
        .call(|reply| storage::Request::Put {
            namespace: "@account".into(),
            key,
            value: serde_json::to_vec(&record).expect("json"),
            reply,
        })
        .await
        .expect("storage answers")
        .expect("put");

    let issued = ask(&f, |reply| Request::IssueToken {
        id: id.clone(),
        grant: TokenGrant {
            name: "second".into(),
            scopes: vec![Scope::All],
            ttl: None,
            not_after: None,
        },
        reply,
    })
    .await
    .expect("issued over the other node's change");
    let info = ask(&f, |reply| Request::Get {
        id: id.clone(),
        reply,
    })
    .await
    .expect("the account");
    assert!(info.disabled, "the other node's disable was overwritten");
    assert_eq!(info.tokens, 2);
    assert_eq!(
        f.gate.authenticate(&issued.secret),
        Err(AuthError::Disabled {
            account: id.clone()
        })
    );
    f.rt.shutdown().await;
}
