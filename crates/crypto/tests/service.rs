//! The crypto service through its handle, on the simulation platform.

use std::sync::Arc;
use std::time::Duration;

use crypto::{Algorithm, Crypto, Error, Request};
use runtime::journal::{Event, ExitOutcome};
use runtime::{Builder, Journal, RuntimeLevel};

const OWNER: &str = "alice";

async fn start(dir: &std::path::Path) -> (runtime::Runtime, crypto::Handle, Journal) {
    start_with(dir, |_| {}).await
}

/// The service with its spec changed by `configure` (its settings).
async fn start_with(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut runtime::Spec),
) -> (runtime::Runtime, crypto::Handle, Journal) {
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation"));
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let mut spec = Crypto::default_spec();
    spec.recovery.strategy = runtime::Strategy::Manual;
    configure(&mut spec);
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
    assert_eq!(
        decrypt(vec![0; 5], b"ctx").await,
        Err(Error::ShortCiphertext(5))
    );
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

async fn first_exit_error(journal: &Journal) -> String {
    let exited = journal
        .wait_for(0, Duration::from_secs(30), |e| {
            matches!(e.event, Event::Exited { .. })
        })
        .await
        .expect("exited");
    match &exited.event {
        Event::Exited {
            outcome: ExitOutcome::Error { message },
            ..
        } => message.clone(),
        _ => panic!("{exited:?}"),
    }
}

/// A key operation appends one record to `keystore.log`; the host taking one record out of the
/// middle (a deleted key's removal, say) breaks the chain and the service does not start.
#[tokio::test]
async fn a_record_taken_out_of_the_change_log_fails_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    for _ in 0..5 {
        generate(&h, OWNER, Algorithm::Ed25519).await; // 1 (a snapshot), then records 2 to 5
    }
    rt.shutdown().await;
    let log = dir.path().join("keystore.log");
    let bytes = std::fs::read(&log).expect("the change log");
    let record =
        |at: usize| 4 + u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
    let first = record(0);
    let second = record(first);
    let mut holed = bytes[..first].to_vec();
    holed.extend_from_slice(&bytes[first + second..]);
    std::fs::write(&log, &holed).expect("write");
    let (rt, _h, journal) = start(dir.path()).await;
    let message = first_exit_error(&journal).await;
    assert!(
        message.contains("keystore.log: record 4 where 3 was due"),
        "{message}"
    );
    rt.shutdown().await;
}

/// `services.crypto.max_keys_per_account`: one key past it is refused with 413's kind and the
/// setting's name, for generate and derive alike; another account still creates keys, and a
/// service owner (`@storage`, a key per namespace) is not an account. A new value applies live.
#[tokio::test]
async fn an_account_past_its_key_cap_is_refused_and_another_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start_with(dir.path(), |spec| spec.set(&crypto::MAX_KEYS, 2)).await;
    ready(&rt).await;
    let aes = generate(&h, OWNER, Algorithm::Aes256gcm).await;
    generate(&h, OWNER, Algorithm::P256).await;
    let refused = h
        .call(|reply| Request::Generate {
            owner: OWNER.into(),
            algorithm: Algorithm::Ed25519,
            reply,
        })
        .await
        .expect("call");
    let Err(e @ Error::TooManyKeys { .. }) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(runtime::Classify::kind(&e), runtime::ErrorKind::TooLarge);
    assert!(
        e.to_string()
            .contains("`services.crypto.max_keys_per_account`"),
        "{e}"
    );
    let derived = h
        .call(|reply| Request::Derive {
            owner: OWNER.into(),
            id: aes.id.clone(),
            salt: b"s".to_vec(),
            info: b"i".to_vec(),
            reply,
        })
        .await
        .expect("call");
    assert!(
        matches!(derived, Err(Error::TooManyKeys { .. })),
        "{derived:?}"
    );
    generate(&h, "bob", Algorithm::Ed25519).await;
    for _ in 0..3 {
        generate(&h, "@storage", Algorithm::Aes256gcm).await;
    }
    // The setting applies live: raised by a new configuration, the next key is made.
    let mut raised = Crypto::default_spec();
    raised.recovery.strategy = runtime::Strategy::Manual;
    raised.set(&crypto::MAX_KEYS, 3);
    rt.client()
        .reconfigure(
            vec![raised],
            Default::default(),
            runtime::journal::Cause::Operator {
                command: "test".into(),
            },
        )
        .await
        .expect("applied live");
    generate(&h, OWNER, Algorithm::Ed25519).await;
    let full = h
        .call(|reply| Request::Generate {
            owner: OWNER.into(),
            algorithm: Algorithm::Ed25519,
            reply,
        })
        .await
        .expect("call");
    assert!(
        matches!(full, Err(Error::TooManyKeys { limit: 3, .. })),
        "{full:?}"
    );
    // Deleting one makes room again.
    h.call(|reply| Request::Delete {
        owner: OWNER.into(),
        id: aes.id.clone(),
        reply,
    })
    .await
    .expect("call")
    .expect("delete");
    generate(&h, OWNER, Algorithm::Ed25519).await;
    rt.shutdown().await;
}

async fn encrypt(h: &crypto::Handle, id: &str, plaintext: &[u8]) -> Vec<u8> {
    h.call(|reply| Request::Encrypt {
        owner: OWNER.into(),
        id: id.into(),
        plaintext: plaintext.to_vec(),
        aad: b"aad".to_vec(),
        reply,
    })
    .await
    .expect("call")
    .expect("encrypt")
}

async fn decrypt(h: &crypto::Handle, id: &str, ciphertext: &[u8]) -> Vec<u8> {
    h.call(|reply| Request::Decrypt {
        owner: OWNER.into(),
        id: id.into(),
        ciphertext: ciphertext.to_vec(),
        aad: b"aad".to_vec(),
        reply,
    })
    .await
    .expect("call")
    .expect("decrypt")
}

fn version_of(ciphertext: &[u8]) -> u32 {
    u32::from_be_bytes(ciphertext[..4].try_into().expect("4 bytes"))
}

/// An AES-256-GCM key version makes at most `max_encryptions_per_key` encryptions (2^32 by
/// default, NIST SP 800-38D §8.3), then the key rotates and the old version still decrypts. The
/// count survives a restart: it resumes from what was reserved on disk, never from zero.
#[tokio::test]
async fn an_aes_key_rotates_at_its_encryption_bound_and_counts_across_restarts() {
    assert_eq!(
        Crypto::default_spec().get(&crypto::MAX_ENCRYPTIONS),
        1 << 32
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let lowered = |spec: &mut runtime::Spec| spec.set(&crypto::MAX_ENCRYPTIONS, 3);
    let (rt, h, _) = start_with(dir.path(), lowered).await;
    ready(&rt).await;
    let key = generate(&h, OWNER, Algorithm::Aes256gcm).await;
    let mut sealed = Vec::new();
    for i in 0..4u8 {
        sealed.push(encrypt(&h, &key.id, &[i]).await);
    }
    let versions: Vec<u32> = sealed.iter().map(|c| version_of(c)).collect();
    assert_eq!(
        versions,
        [1, 1, 1, 2],
        "the fourth encryption is the new version's"
    );
    for (i, c) in sealed.iter().enumerate() {
        assert_eq!(decrypt(&h, &key.id, c).await, [i as u8]);
    }
    rt.shutdown().await;

    // Version 2 made one of its three; after a restart its reservation (three) counts as made.
    let (rt, h, _) = start_with(dir.path(), lowered).await;
    ready(&rt).await;
    let after = encrypt(&h, &key.id, b"after").await;
    assert_eq!(version_of(&after), 3);
    assert_eq!(decrypt(&h, &key.id, &sealed[0]).await, [0]);
    rt.shutdown().await;
}

async fn lend(h: &crypto::Handle, owner: &str, id: &str) -> Result<crypto::Opener, Error> {
    h.call(|reply| Request::Lend {
        owner: owner.into(),
        id: id.into(),
        reply,
    })
    .await
    .expect("call")
}

/// A lent opener decrypts what the service encrypted, exactly as its `Decrypt` would: the tag and
/// the associated data are checked, and a version made after it was lent is one it does not hold
/// (the holder asks again). Only an AES key of the caller's own is lent, and its Debug form shows
/// no key material.
#[tokio::test]
async fn an_opener_decrypts_as_the_service_does_and_only_for_its_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rt, h, _) = start(dir.path()).await;
    ready(&rt).await;
    let key = generate(&h, OWNER, Algorithm::Aes256gcm).await;
    let c1 = encrypt(&h, &key.id, b"first").await;
    let opener = lend(&h, OWNER, &key.id).await.expect("lend");
    assert!(opener.holds(&c1));
    assert_eq!(opener.open(&c1, b"aad"), Ok(b"first".to_vec()));
    assert_eq!(opener.open(&c1, b"other"), Err(Error::Integrity));
    let mut flipped = c1.clone();
    flipped[20] ^= 1;
    assert_eq!(opener.open(&flipped, b"aad"), Err(Error::Integrity));
    assert_eq!(opener.open(&[0; 7], b"aad"), Err(Error::ShortCiphertext(7)));
    assert!(!opener.holds(&[0; 7]));

    h.call(|reply| Request::Rotate {
        owner: OWNER.into(),
        id: key.id.clone(),
        reply,
    })
    .await
    .expect("call")
    .expect("rotate");
    let c2 = encrypt(&h, &key.id, b"second").await;
    assert_eq!(version_of(&c2), 2);
    assert!(!opener.holds(&c2), "lent before the rotation");
    assert_eq!(opener.open(&c2, b"aad"), Err(Error::Integrity));
    let again = lend(&h, OWNER, &key.id).await.expect("lend");
    assert_eq!(again.open(&c1, b"aad"), Ok(b"first".to_vec()));
    assert_eq!(again.open(&c2, b"aad"), Ok(b"second".to_vec()));

    let debug = format!("{again:?}");
    assert_eq!(debug, "Opener { versions: [1, 2], .. }");
    assert!(matches!(
        lend(&h, "mallory", &key.id).await,
        Err(Error::NotFound(_))
    ));
    let signing = generate(&h, OWNER, Algorithm::Ed25519).await;
    assert!(matches!(
        lend(&h, OWNER, &signing.id).await,
        Err(Error::WrongKind { .. })
    ));
    rt.shutdown().await;
}
