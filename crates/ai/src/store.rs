//! Models kept in the storage service, in their owner's namespace (so sealed, rollback-evident, and
//! deleted with the account): `.ai/models/ID` holds the description, and an ONNX file is split into
//! `.ai/models/ID/N` chunks under the storage value limit. All of a model is written in one atomic
//! batch, and its SHA-256 is checked when it is read back.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::train::Trained;
use crate::{Error, ModelInfo, StorageFailure};

const PREFIX: &str = ".ai/models/";
/// Chunk size: well under the storage service's default 1 MiB value limit.
const CHUNK: usize = 512 << 10;

/// What is stored under `.ai/models/ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) info: ModelInfo,
    /// ONNX: how many chunks hold the file.
    pub(crate) chunks: usize,
    /// Trained models: their parameters.
    pub(crate) trained: Option<Trained>,
}

fn meta_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn chunk_key(id: &str, i: usize) -> String {
    format!("{PREFIX}{id}/{i}")
}

/// A storage call that got no answer: the storage service is restarting or its circuit is open.
fn storage_error(e: runtime::CallError) -> Error {
    Error::Storage(StorageFailure::NoAnswer(e))
}

/// What the storage service refused. A limit that retrying will not change is the caller's
/// problem (too large), not an outage.
fn refused(e: storage::Error) -> Error {
    match e {
        storage::Error::TooLarge {
            what,
            size,
            limit,
            setting,
        } => Error::TooLarge {
            what: format!("{what} (the model as stored)"),
            size: size as u64,
            limit: limit as u64,
            service: "storage",
            setting,
        },
        storage::Error::Integrity { .. } => {
            Error::Integrity(format!("the stored model is not used: {e}"))
        }
        storage::Error::NotFound(_) | storage::Error::BadInput(_) => {
            Error::Internal(format!("storage refused the model: {e}"))
        }
        other => Error::Storage(StorageFailure::Failed(other)),
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(crate) storage: storage::Handle,
}

impl Store {
    async fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(runtime::Reply<Result<T, storage::Error>>) -> storage::Request,
    ) -> Result<Result<T, storage::Error>, Error> {
        self.storage.call(make).await.map_err(storage_error)
    }

    /// Writes the record and, for ONNX, the file, in one commit.
    pub(crate) async fn put(&self, record: &Record, file: Option<&[u8]>) -> Result<(), Error> {
        let owner = record.info.owner.clone();
        let id = &record.info.id;
        let mut writes = vec![storage::Write::Put {
            key: meta_key(id),
            value: serde_json::to_vec(record).map_err(|e| Error::Internal(e.to_string()))?,
        }];
        for (i, chunk) in file.unwrap_or_default().chunks(CHUNK).enumerate() {
            writes.push(storage::Write::Put {
                key: chunk_key(id, i),
                value: chunk.to_vec(),
            });
        }
        self.call(|reply| storage::Request::Batch {
            namespace: owner,
            writes,
            reply,
        })
        .await?
        .map_err(refused)?;
        Ok(())
    }

    pub(crate) async fn record(&self, owner: &str, id: &str) -> Result<Record, Error> {
        if id.is_empty() || id.contains('/') {
            return Err(Error::NotFound(id.to_owned()));
        }
        let value = match self
            .call(|reply| storage::Request::Get {
                namespace: owner.to_owned(),
                key: meta_key(id),
                reply,
            })
            .await?
        {
            Ok(v) => v,
            Err(storage::Error::NotFound(_)) => return Err(Error::NotFound(id.to_owned())),
            Err(e) => return Err(refused(e)),
        };
        let mut record: Record = serde_json::from_slice(&value.data)
            .map_err(|e| Error::Internal(format!("model {id}'s record does not parse: {e}")))?;
        record.info.owner = owner.to_owned();
        Ok(record)
    }

    /// The ONNX file of `record`, checked against its hash.
    pub(crate) async fn file(&self, record: &Record) -> Result<Vec<u8>, Error> {
        let mut file = Vec::with_capacity(usize::try_from(record.info.size_bytes).unwrap_or(0));
        for i in 0..record.chunks {
            let chunk = self
                .call(|reply| storage::Request::Get {
                    namespace: record.info.owner.clone(),
                    key: chunk_key(&record.info.id, i),
                    reply,
                })
                .await?
                .map_err(refused)?;
            file.extend_from_slice(&chunk.data);
        }
        if sha256_hex(&file) != record.info.sha256 {
            return Err(Error::Integrity(format!(
                "model {}'s stored file does not match its recorded SHA-256; it is not used",
                record.info.id
            )));
        }
        Ok(file)
    }

    pub(crate) async fn list(&self, owner: &str) -> Result<Vec<ModelInfo>, Error> {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .call(|reply| storage::Request::List {
                    namespace: owner.to_owned(),
                    prefix: PREFIX.to_owned(),
                    after: after.clone(),
                    limit: 1000,
                    reply,
                })
                .await?
                .map_err(refused)?;
            for listed in &page.keys {
                if let Some(id) = listed.key.strip_prefix(PREFIX)
                    && !id.contains('/')
                {
                    ids.push(id.to_owned());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut models = Vec::with_capacity(ids.len());
        for id in ids {
            models.push(self.record(owner, &id).await?.info);
        }
        models.sort_by_key(|m| std::cmp::Reverse(m.created_ms));
        Ok(models)
    }

    pub(crate) async fn delete(&self, owner: &str, id: &str) -> Result<(), Error> {
        let record = self.record(owner, id).await?;
        let mut writes = vec![storage::Write::Delete { key: meta_key(id) }];
        for i in 0..record.chunks {
            writes.push(storage::Write::Delete {
                key: chunk_key(id, i),
            });
        }
        self.call(|reply| storage::Request::Batch {
            namespace: owner.to_owned(),
            writes,
            reply,
        })
        .await?
        .map_err(refused)?;
        Ok(())
    }
}
