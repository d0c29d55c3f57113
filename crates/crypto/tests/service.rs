//! The crypto service through its handle, on the simulation platform.

use std::sync::Arc;
use std::time::Duration;

use crypto::{Algorithm, Crypto, Error, Request};
use runtime::journal::{Event, ExitOutcome};
use runtime::{Builder, Journal, RuntimeLevel};

const OWNER: &str = "alice";

async fn start(dir: &std::path::Path) -> (runtime::Runtime, crypto::Handle, Journal) {
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation"));
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let mut spec = Crypto::default_spec();
    spec.recovery.strategy = runtime::Strategy::Manual;
    let handle = b.add_with_spec(Crypto::new(dir, platform), spec);
    let rt = b.start().expect("start");
    (rt, handle, journal)
}

async fn ready(rt: &runtime::Runtime) {
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
}

async fn generate(h: &crypto::Handle, owner: &str, algorithm: Algorithm) -> crypto::KeyInfo {
    h.call(|reply| Request::Generate {
        owner: owner.into(),
        algorithm,
        reply,
    })
    .await
    .expect("call")
    .expect("generate")
}

async fn sign(
    h: &crypto::Handle,
    id: &str,
    message: &[u8],
    der: bool,
) -> Result<crypto::Signed, Error> {
    h.call(|reply| Request::Sign {
        owner: OWNER.into(),
        id: id.into(),
        message: message.to_vec(),
        der,
        reply,
    })
    .await
    .expect("call")
}

async fn verify(h: &crypto::Handle, id: &str, message: &[u8], signature: &[u8]) -> bool {
    h.call(|reply| Request::Verify {
        owner: OWNER.into(),
        id: id.into(),
        message: message.to_vec(),
        signature: signature.to_vec(),
        reply,
    })
    .await
    .expect("call")
    .expect("verify")
}

#[tokio::test]
async fn every_algorithm_signs_verifies_rotates_and_isolates_owners() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    for algorithm in [Algorithm::Secp256k1, Algorithm::P256, Algorithm::Ed25519] {
        let key = generate(&h, OWNER, algorithm).await;
        let s1 = sign(&h, &key.id, b"hello", false).await.expect("sign");
        assert_eq!((s1.signature.len(), s1.version), (64, 1));
        assert!(verify(&h, &key.id, b"hello", &s1.signature).await);
        assert!(!verify(&h, &key.id, b"hellO", &s1.signature).await);
        if algorithm != Algorithm::Ed25519 {
            let der = sign(&h, &key.id, b"hello", true).await.expect("sign der");
            assert_eq!(der.signature[0], 0x30, "DER sequence");
            assert!(verify(&h, &key.id, b"hello", &der.signature).await);
        }
        let rotated = h
            .call(|reply| Request::Rotate {
                owner: OWNER.into(),
                id: key.id.clone(),
                reply,
            })
            .await
            .expect("call")
            .expect("rotate");
        assert_eq!((rotated.version, rotated.versions.len()), (2, 2));
        let s2 = sign(&h, &key.id, b"hello", false).await.expect("sign");
        assert_eq!(s2.version, 2);
        // Older versions still verify.
        assert!(verify(&h, &key.id, b"hello", &s1.signature).await);
        assert!(verify(&h, &key.id, b"hello", &s2.signature).await);
        // Another owner can neither see nor use the key.
        let other = h
            .call(|reply| Request::Describe {
                owner: "mallory".into(),
                id: key.id.clone(),
                reply,
            })
            .await
            .expect("call");
        assert_eq!(other, Err(Error::NotFound(key.id.clone())));
    }
    let listed = h
        .call(|reply| Request::List {
            owner: "mallory".into(),
            reply,
        })
        .await
        .expect("call")
        .expect("list");
    assert!(listed.is_empty());
    rt.shutdown().await;
}

#[tokio::test]
async fn aes_encrypts_with_associated_data_across_rotations_and_refuses_wrong_kinds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    let key = generate(&h, OWNER, Algorithm::Aes256gcm).await;
    let encrypt = |plaintext: &'static [u8], aad: &'static [u8]| {
        let h = h.clone();
        let id = key.id.clone();
        async move {
            h.call(|reply| Request::Encrypt {
                owner: OWNER.into(),
                id,
                plaintext: plaintext.to_vec(),
                aad: aad.to_vec(),
                reply,
            })
            .await
            .expect("call")
        }
    };
    let decrypt = |ciphertext: Vec<u8>, aad: &'static [u8]| {
        let h = h.clone();
        let id = key.id.clone();
        async move {
            h.call(|reply| Request::Decrypt {
                owner: OWNER.into(),
                id,
                ciphertext,
                aad: aad.to_vec(),
                reply,
            })
            .await
            .expect("call")
        }
    };
    let c1 = encrypt(b"secret", b"ctx").await.expect("encrypt");
    assert_eq!(decrypt(c1.clone(), b"ctx").await, Ok(b"secret".to_vec()));
    assert_eq!(decrypt(c1.clone(), b"other").await, Err(Error::Integrity));
    let mut flipped = c1.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(decrypt(flipped, b"ctx").await, Err(Error::Integrity));
    assert!(matches!(
        decrypt(vec![0; 5], b"ctx").await,
        Err(Error::BadInput(_))
    ));
    h.call(|reply| Request::Rotate {
        owner: OWNER.into(),
        id: key.id.clone(),
        reply,
    })
    .await
    .expect("call")
    .expect("rotate");
    let c2 = encrypt(b"newer", b"").await.expect("encrypt");
    assert_eq!(&c2[..4], &2u32.to_be_bytes());
    assert_eq!(
        decrypt(c1, b"ctx").await,
        Ok(b"secret".to_vec()),
        "version 1 still decrypts"
    );
    // Wrong kinds: sign with AES, encrypt with Ed25519.
    assert_eq!(
        sign(&h, &key.id, b"x", false).await,
        Err(Error::WrongKind {
            algorithm: "aes256gcm",
            operation: "sign"
        })
    );
    let ed = generate(&h, OWNER, Algorithm::Ed25519).await;
    let wrong = h
        .call(|reply| Request::Encrypt {
            owner: OWNER.into(),
            id: ed.id.clone(),
            plaintext: vec![1],
            aad: vec![],
            reply,
        })
        .await
        .expect("call");
    assert_eq!(
        wrong,
        Err(Error::WrongKind {
            algorithm: "ed25519",
            operation: "encrypt"
        })
    );
    // Derive gives a new AES key; delete removes one.
    let derived = h
        .call(|reply| Request::Derive {
            owner: OWNER.into(),
            id: key.id.clone(),
            salt: b"s".to_vec(),
            info: b"i".to_vec(),
            reply,
        })
        .await
        .expect("call")
        .expect("derive");
    assert_eq!(derived.algorithm, Algorithm::Aes256gcm);
    h.call(|reply| Request::Delete {
        owner: OWNER.into(),
        id: derived.id.clone(),
        reply,
    })
    .await
    .expect("call")
    .expect("delete");
    let gone = h
        .call(|reply| Request::Describe {
            owner: OWNER.into(),
            id: derived.id.clone(),
            reply,
        })
        .await
        .expect("call");
    assert_eq!(gone, Err(Error::NotFound(derived.id)));
    rt.shutdown().await;
}

#[tokio::test]
async fn keys_survive_a_service_restart_and_a_process_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, journal) = start(dir.path()).await;
    ready(&rt).await;
    let key = generate(&h, OWNER, Algorithm::P256).await;
    let sig = sign(&h, &key.id, b"persist", false).await.expect("sign");
    let since = journal.last_seq();
    rt.restart(&crypto::NAME).await.expect("restart");
    journal
        .wait_for(since, Duration::from_secs(30), |e| {
            matches!(e.event, Event::Up { .. })
        })
        .await
        .expect("up");
    assert!(verify(&h, &key.id, b"persist", &sig.signature).await);
    rt.shutdown().await;
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    let again = h
        .call(|reply| Request::Describe {
            owner: OWNER.into(),
            id: key.id.clone(),
            reply,
        })
        .await
        .expect("call")
        .expect("describe");
    assert_eq!(again.versions[0].public_key, key.versions[0].public_key);
    assert!(verify(&h, &key.id, b"persist", &sig.signature).await);
    rt.shutdown().await;
}

#[tokio::test]
async fn a_tampered_keystore_fails_the_service_with_an_integrity_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    generate(&h, OWNER, Algorithm::Ed25519).await;
    rt.shutdown().await;
    let path = dir.path().join("keystore.sealed");
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let (rt, _h, journal) = start(dir.path()).await;
    let exited = journal
        .wait_for(0, Duration::from_secs(30), |e| {
            matches!(e.event, Event::Exited { .. })
        })
        .await
        .expect("exited");
    let Event::Exited {
        outcome: ExitOutcome::Error { message },
        ..
    } = &exited.event
    else {
        panic!("{exited:?}")
    };
    assert!(message.contains("fails its integrity check"), "{message}");
    rt.shutdown().await;
}

#[tokio::test]
async fn signatures_verify_with_an_independent_implementation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    let mut entries = Vec::new();
    for algorithm in [Algorithm::Secp256k1, Algorithm::P256, Algorithm::Ed25519] {
        let key = generate(&h, OWNER, algorithm).await;
        for (i, message) in [b"".as_slice(), b"cloister", &[0xffu8; 1000]]
            .into_iter()
            .enumerate()
        {
            let der = algorithm != Algorithm::Ed25519 && i % 2 == 1;
            let signed = sign(&h, &key.id, message, der).await.expect("sign");
            entries.push(serde_json::json!({
                "algorithm": algorithm.as_str(),
                "public_key": key.versions[0].public_key,
                "message": hex::encode(message),
                "signature": hex::encode(&signed.signature),
                "der": der,
            }));
        }
    }
    rt.shutdown().await;
    let file = dir.path().join("signatures.json");
    std::fs::write(&file, serde_json::to_vec(&entries).expect("json")).expect("write");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_signatures.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect(
            "python3 with the `cryptography` package is needed for this test (.ci/run installs it)",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("9 signatures verified"), "{stdout}");
}
