//! The namespace keys' openers: decrypt-only copies of their versions that the crypto service
//! lends ([`crypto::Opener`]), so that a read decrypts in the storage service without a request to
//! the crypto service per value. Writes still ask it to encrypt: it counts every encryption against
//! the key's bound.

use std::collections::HashMap;

use crate::{Error, KEY_OWNER};

/// Crypto key id → its opener, as lent so far.
#[derive(Default)]
pub(crate) struct Openers(HashMap<String, crypto::Opener>);

impl Openers {
    /// The opener for key `id`, lent again when the one held lacks the version `ciphertext` names
    /// (the key rotated since). A key the crypto service does not know, or not as an AES key, can
    /// only be an id damaged or planted in the file: an integrity failure of `key`, the value read.
    pub(crate) async fn get(
        &mut self,
        crypto: &crypto::Handle,
        id: &str,
        ciphertext: &[u8],
        key: &str,
    ) -> Result<crypto::Opener, Error> {
        if let Some(opener) = self.0.get(id)
            && opener.holds(ciphertext)
        {
            return Ok(opener.clone());
        }
        let lent = crypto
            .call(|reply| crypto::Request::Lend {
                owner: KEY_OWNER.into(),
                id: id.to_owned(),
                reply,
            })
            .await
            .map_err(Error::CryptoUnavailable)?;
        match lent {
            Ok(opener) => {
                self.0.insert(id.to_owned(), opener.clone());
                Ok(opener)
            }
            Err(
                crypto::Error::BadInput(_)
                | crypto::Error::NotFound(_)
                | crypto::Error::WrongKind { .. },
            ) => Err(Error::Integrity {
                key: key.to_owned(),
            }),
            Err(other) => Err(Error::Internal(format!("the namespace key: {other}"))),
        }
    }

    /// Drops key `id`'s opener (its namespace was dropped and the key deleted).
    pub(crate) fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }
}
