//! Keys: the caller's own, sealed to the enclave. Only their public halves ever leave it.

use base64::Engine;
use reqwest::Method;
use wire::crypto::{
    Algorithm, Ciphertext, DecryptBody, DeriveBody, EncryptBody, GenerateBody, KeyInfo, KeyList,
    Plaintext,
};

use crate::client::{Client, segment};
use crate::error::Error;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Client {
    /// `POST /v1/crypto/keys`: a new key of `algorithm`, owned by the caller
    /// (`crypto.too_many_keys` past the account's bound).
    pub async fn create_key(&self, algorithm: Algorithm) -> Result<KeyInfo, Error> {
        let body = GenerateBody { algorithm };
        self.call_with(Method::POST, "/v1/crypto/keys", &body).await
    }

    /// `GET /v1/crypto/keys`: the caller's keys.
    pub async fn keys(&self) -> Result<KeyList, Error> {
        self.call(Method::GET, "/v1/crypto/keys").await
    }

    /// `GET /v1/crypto/keys/{id}`: one key, with every version's public key
    /// (`crypto.key_not_found` for another account's).
    pub async fn key(&self, id: &str) -> Result<KeyInfo, Error> {
        self.call(Method::GET, &key_path(id, "")).await
    }

    /// `POST /v1/crypto/keys/{id}/rotate`: a new version signs and encrypts from now on; the older
    /// ones still verify and decrypt.
    pub async fn rotate_key(&self, id: &str) -> Result<KeyInfo, Error> {
        self.call(Method::POST, &key_path(id, "/rotate")).await
    }

    /// `DELETE /v1/crypto/keys/{id}`: the key and every version of it.
    pub async fn delete_key(&self, id: &str) -> Result<(), Error> {
        self.call_empty(Method::DELETE, &key_path(id, "")).await
    }

    /// `POST /v1/crypto/keys/{id}/encrypt`: `plaintext` sealed with the AES key `id` under its
    /// current version, bound to `aad` (which decrypting must give again).
    pub async fn encrypt(
        &self,
        id: &str,
        plaintext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        let body = EncryptBody {
            plaintext: B64.encode(plaintext),
            aad: aad.map(|a| B64.encode(a)),
        };
        let path = key_path(id, "/encrypt");
        let answer: Ciphertext = self.call_with(Method::POST, &path, &body).await?;
        self.base64(&path, &answer.ciphertext)
    }

    /// `POST /v1/crypto/keys/{id}/decrypt`: the plaintext of what [`Client::encrypt`] gave; a
    /// ciphertext or `aad` that was changed is `crypto.integrity`.
    pub async fn decrypt(
        &self,
        id: &str,
        ciphertext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Vec<u8>, Error> {
        let body = DecryptBody {
            ciphertext: B64.encode(ciphertext),
            aad: aad.map(|a| B64.encode(a)),
        };
        let path = key_path(id, "/decrypt");
        let answer: Plaintext = self.call_with(Method::POST, &path, &body).await?;
        self.base64(&path, &answer.plaintext)
    }

    /// `POST /v1/crypto/keys/{id}/derive`: a new AES key derived from the AES key `id` with
    /// HKDF-SHA256 (`info` and an optional `salt`), owned by the caller.
    pub async fn derive_key(
        &self,
        id: &str,
        info: &[u8],
        salt: Option<&[u8]>,
    ) -> Result<KeyInfo, Error> {
        let body = DeriveBody {
            info: B64.encode(info),
            salt: salt.map(|s| B64.encode(s)),
        };
        self.call_with(Method::POST, &key_path(id, "/derive"), &body)
            .await
    }

    /// Base64 `text` from the answer of `path`, as bytes.
    fn base64(&self, path: &str, text: &str) -> Result<Vec<u8>, Error> {
        B64.decode(text).map_err(|e| Error::Decode {
            url: format!("{}{path}", self.base_url()),
            source: serde::de::Error::custom(format!("not base64: {e}")),
        })
    }
}

fn key_path(id: &str, rest: &str) -> String {
    format!("/v1/crypto/keys/{}{rest}", segment(id, false))
}
