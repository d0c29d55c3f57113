//! The size limits in force for one request: read from the live spec, checked before anything is
//! encrypted or written, each refusal naming its setting.

use runtime::Spec;

use super::{MAX_BATCH_WRITES, MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_VALUE_BYTES};
use crate::quota::{MAX_ACCOUNT_BYTES, MAX_ACCOUNT_KEYS, Quota};
use crate::{BadInput, Error};

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) key: usize,
    pub(super) value: usize,
    pub(super) batch: usize,
    pub(super) list: usize,
    pub(super) quota: Quota,
}

impl Limits {
    pub(super) fn of(spec: &Spec) -> Limits {
        Limits {
            key: spec.get(&MAX_KEY_BYTES),
            value: spec.get(&MAX_VALUE_BYTES),
            batch: spec.get(&MAX_BATCH_WRITES),
            list: spec.get(&MAX_LIST_LIMIT),
            quota: Quota {
                keys: spec.get(&MAX_ACCOUNT_KEYS),
                bytes: spec.get(&MAX_ACCOUNT_BYTES),
            },
        }
    }

    pub(super) fn check_key(&self, key: &str) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::BadInput(BadInput::EmptyKey));
        }
        if key.len() > self.key {
            return Err(Error::TooLarge {
                what: "the key",
                size: key.len(),
                limit: self.key,
                setting: MAX_KEY_BYTES.name(),
            });
        }
        Ok(())
    }

    pub(super) fn check_value(&self, value: &[u8]) -> Result<(), Error> {
        if value.len() > self.value {
            return Err(Error::TooLarge {
                what: "the value",
                size: value.len(),
                limit: self.value,
                setting: MAX_VALUE_BYTES.name(),
            });
        }
        Ok(())
    }
}

pub(super) fn check_namespace(namespace: &str) -> Result<(), Error> {
    if namespace.is_empty() {
        return Err(Error::BadInput(BadInput::EmptyNamespace));
    }
    Ok(())
}
