//! The six built-in services wired together, in one place: `cloister run`, the API tests and the
//! benches all build them through [`build`], so how crypto, storage, account, computation, the
//! oracle and the ai service reach each other is said once.
//!
//! The stack registers services on a [`runtime::Builder`] and starts nothing; the caller adds its
//! own services (the binary's synthetic ones, a test's fakes) to the same builder and starts it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use runtime::{Builder, Journal, ServiceName, Spec};

/// The built-in services' names, dependencies first (the order [`build`] registers them in).
pub const NAMES: [ServiceName; 6] = [
    crypto::NAME,
    storage::NAME,
    account::NAME,
    computation::NAME,
    oracle::NAME,
    ai::NAME,
];

/// The built-in services with their default specs, dependencies first: the catalog a
/// configuration is parsed and resolved against.
pub fn catalog() -> Vec<Spec> {
    vec![
        crypto::Crypto::default_spec(),
        storage::Storage::default_spec(),
        account::Account::default_spec(),
        computation::Computation::default_spec(),
        oracle::Oracle::default_spec(),
        ai::Ai::default_spec(),
    ]
}

/// The storage backend `[storage]` names, its URL read (from its file, at start) and parsed once:
/// the error names the setting and says what is wrong, never the URL (it may hold a password).
pub fn storage_backend(
    config: &runtime::config::StorageConfig,
) -> Result<storage::Backend, BackendError> {
    use runtime::config::{DatabaseUrl, StorageBackend};
    match &config.backend {
        StorageBackend::Redb => Ok(storage::Backend::Redb),
        StorageBackend::Postgres { database_url } => {
            let url = database_url.read().map_err(BackendError::UrlFile)?;
            let setting = match database_url {
                DatabaseUrl::Inline(_) => "storage.database_url",
                DatabaseUrl::File(_) => "storage.database_url_file",
            };
            let target = storage::postgres::Target::parse(&url)
                .map_err(|error| BackendError::Url { setting, error })?;
            Ok(storage::Backend::Postgres(Box::new(target)))
        }
    }
}

/// Why `[storage]` names no usable backend; the message names the setting, never the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// The URL's file cannot be read, or is empty.
    UrlFile(runtime::config::UrlFileError),
    /// The URL cannot be used; `setting` is where it came from.
    Url {
        setting: &'static str,
        error: storage::postgres::BadTarget,
    },
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::UrlFile(e) => e.fmt(f),
            BackendError::Url { setting, error } => write!(f, "{setting}: {error}"),
        }
    }
}

impl std::error::Error for BackendError {}

/// What the services are built on.
#[derive(Clone)]
pub struct Options {
    /// Where crypto keeps its keystore and storage its database.
    pub data_dir: PathBuf,
    /// The enclave platform: sealing, identity, quotes.
    pub platform: Arc<dyn enclave::Platform>,
    /// The journal account and token changes are audited in (the builder's own).
    pub journal: Journal,
    /// Where storage keeps its records (`[storage]`, parsed).
    pub storage_backend: storage::Backend,
    /// Accept, once, a storage database at this commit that disagrees with its freshness counter
    /// (`cloister run --accept-storage-rollback`).
    pub accept_storage_rollback: Option<u64>,
    /// Accept, once, a keystore at this generation that disagrees with its freshness counter
    /// (`cloister run --accept-keystore-rollback`).
    pub accept_keystore_rollback: Option<u64>,
    /// The cluster's vault (`cluster::Node::vault`): crypto keeps its keys there once the node
    /// holds the cluster key. `None` on a node of no cluster database.
    pub vault: Option<crypto::VaultWatch>,
    /// This node was admitted to its cluster in this start (`storage::Storage::newcomer`).
    pub newcomer: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data_dir", &self.data_dir)
            .field("storage_backend", &self.storage_backend)
            .field("accept_storage_rollback", &self.accept_storage_rollback)
            .field("accept_keystore_rollback", &self.accept_keystore_rollback)
            .finish_non_exhaustive()
    }
}

/// The handles of the built-in services, as the API serves them.
#[derive(Clone, Debug)]
pub struct Stack {
    pub crypto: crypto::Handle,
    pub storage: storage::Handle,
    pub account: account::Handle,
    /// Resolves account tokens and applies the per-account rate limit, without a bus round trip.
    pub accounts: account::Gate,
    pub computation: computation::Handle,
    pub oracle: oracle::Handle,
    pub ai: ai::Handle,
    /// Answers predictions of small models the ai service has loaded, without a bus round trip.
    pub ai_inline: ai::Inline,
    /// Answers reads of values the storage service has cached, without a bus round trip.
    pub storage_reads: storage::Reads,
}

/// Registers the six built-in services on `builder`, dependencies first, and disables every name
/// in `disabled`.
///
/// Each built-in service takes its spec from `specs` (as a configuration resolved it); one that is
/// not there (switched off) is registered with its default spec and stays stopped, so its handle
/// answers that it is unavailable and its endpoints can say so. Specs of other services are left
/// to the caller, which adds them to the same builder (before or after) and starts it.
pub fn build(
    builder: &mut Builder,
    specs: &[Spec],
    disabled: &BTreeSet<ServiceName>,
    options: Options,
) -> Stack {
    let spec = |name: &ServiceName, default: fn() -> Spec| {
        specs
            .iter()
            .find(|s| &s.name == name)
            .cloned()
            .unwrap_or_else(default)
    };
    let Options {
        data_dir,
        platform,
        journal,
        storage_backend,
        accept_storage_rollback,
        accept_keystore_rollback,
        vault,
        newcomer,
    } = options;
    let shared = storage_backend.database().is_some();
    let mut recipe =
        crypto::Crypto::new(&data_dir, platform.clone()).accept_rollback(accept_keystore_rollback);
    if let Some(vault) = vault {
        recipe = recipe.shared(vault);
    }
    let crypto = builder.add_with_spec(recipe, spec(&crypto::NAME, crypto::Crypto::default_spec));
    let service = storage::Storage::new(&data_dir, platform.clone(), crypto.clone())
        .with_backend(storage_backend)
        .accept_rollback(accept_storage_rollback)
        .newcomer(newcomer);
    let storage_reads = service.reads();
    let storage = builder.add_with_spec(
        service,
        spec(&storage::NAME, storage::Storage::default_spec),
    );
    let service = account::Account::new(crypto.clone(), storage.clone(), journal).shared(shared);
    let accounts = service.gate();
    let account = builder.add_with_spec(
        service,
        spec(&account::NAME, account::Account::default_spec),
    );
    let computation = builder.add_with_spec(
        computation::Computation::new(crypto.clone(), storage.clone()),
        spec(&computation::NAME, computation::Computation::default_spec),
    );
    let oracle = builder.add_with_spec(
        oracle::Oracle::new(crypto.clone(), computation.clone(), platform),
        spec(&oracle::NAME, oracle::Oracle::default_spec),
    );
    let service = ai::Ai::new(storage.clone());
    let ai_inline = service.inline();
    let ai = builder.add_with_spec(service, spec(&ai::NAME, ai::Ai::default_spec));
    for name in disabled {
        builder.disable(name.clone());
    }
    Stack {
        crypto,
        storage,
        account,
        accounts,
        computation,
        oracle,
        ai,
        ai_inline,
        storage_reads,
    }
}
