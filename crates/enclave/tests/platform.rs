//! The platform seam against the simulation and a directory that behaves like Gramine's.

use enclave::quote::{BODY_MR_ENCLAVE, HEADER_LEN, Quote, QuoteError};
use enclave::{
    Error, Gramine, KeyRequest, Platform, Policy, SealError, Simulation, report_data_for_nonce,
    seal, unseal,
};

fn sim(dir: &std::path::Path, code: &[u8], svn: u16) -> Simulation {
    Simulation::open(dir, code, b"[enclave] platform = simulation", svn).expect("simulation")
}

fn request(policy: Policy, svn: u16) -> KeyRequest {
    KeyRequest {
        policy,
        security_version: svn,
        key_id: [7; 32],
    }
}

#[test]
fn simulation_quotes_have_the_dcap_layout_and_say_they_are_simulations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sim(dir.path(), b"binary v1", 1);
    let rd = report_data_for_nonce(b"nonce-123");
    let bytes = s.quote(&rd).expect("quote");
    // The measurement sits at its standard offset: header (48) + 64.
    assert_eq!(
        &bytes[HEADER_LEN + BODY_MR_ENCLAVE..HEADER_LEN + BODY_MR_ENCLAVE + 32],
        &s.identity().measurement
    );
    let q = Quote::parse(&bytes).expect("parse");
    assert_eq!((q.version, q.attestation_key_type), (3, 2));
    assert!(q.is_simulation());
    assert_eq!(q.body.report_data, rd);
    assert_eq!(q.body.mr_signer, s.identity().signer);
    assert!(q.body.debug);
    assert_eq!(
        q.verify(false, Some(&rd), None),
        Err(QuoteError::SimulationNotAccepted)
    );
    assert_eq!(
        q.verify(true, Some(&rd), Some(&s.attestation_public_key())),
        Ok(())
    );
    assert_eq!(
        q.verify(true, Some(&report_data_for_nonce(b"other")), None),
        Err(QuoteError::ReportDataMismatch)
    );
    assert_eq!(
        q.verify(true, None, Some(&[1; 64])),
        Err(QuoteError::UnexpectedKey)
    );
    // Any flipped byte of the signed part breaks the signature.
    for i in [0usize, 20, HEADER_LEN + BODY_MR_ENCLAVE, 431] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        if let Ok(q) = Quote::parse(&bad) {
            assert!(q.verify(true, None, None).is_err(), "byte {i}");
        }
    }
    assert!(matches!(
        Quote::parse(&bytes[..100]),
        Err(QuoteError::Malformed(_))
    ));
}

#[test]
fn sealed_blobs_open_only_here_and_any_flipped_byte_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sim(dir.path(), b"binary v1", 1);
    let blob = seal(
        &s,
        &request(Policy::Measurement, 1),
        b"secret keys",
        b"keystore",
    )
    .expect("seal");
    assert_eq!(
        *unseal(&s, &blob, b"keystore").expect("unseal"),
        b"secret keys"
    );
    assert!(matches!(
        unseal(&s, &blob, b"other aad"),
        Err(SealError::Integrity)
    ));
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x80;
        assert!(
            unseal(&s, &bad, b"keystore").is_err(),
            "flipping byte {i} went unnoticed"
        );
    }
    assert!(matches!(
        unseal(&s, &blob[..blob.len() - 1], b"keystore"),
        Err(SealError::Integrity)
    ));
    assert!(matches!(
        unseal(&s, b"short", b""),
        Err(SealError::Malformed(_))
    ));
    // The same data directory gives the same keys after a restart.
    let again = sim(dir.path(), b"binary v1", 1);
    assert_eq!(
        *unseal(&again, &blob, b"keystore").expect("unseal after restart"),
        b"secret keys"
    );
}

#[test]
fn an_upgraded_enclave_opens_signer_bound_blobs_but_not_measurement_bound_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = sim(dir.path(), b"binary v1", 1);
    let by_signer =
        seal(&v1, &request(Policy::Signer, 1), b"survives upgrades", b"").expect("seal");
    let by_measurement = seal(
        &v1,
        &request(Policy::Measurement, 1),
        b"this build only",
        b"",
    )
    .expect("seal");
    let v2 = sim(dir.path(), b"binary v2", 2);
    assert_ne!(v1.identity().measurement, v2.identity().measurement);
    assert_eq!(
        *unseal(&v2, &by_signer, b"").expect("upgrade reads the old blob"),
        b"survives upgrades"
    );
    match unseal(&v2, &by_measurement, b"") {
        Err(SealError::WrongIdentity {
            policy: Policy::Measurement,
            sealed_for,
            current,
        }) => {
            assert_eq!(sealed_for, hex::encode(v1.identity().measurement));
            assert_eq!(current, hex::encode(v2.identity().measurement));
        }
        other => panic!("expected a wrong-identity error, got {other:?}"),
    }
    // Keys of a newer version are never given to an older enclave.
    assert!(matches!(
        v1.sealing_key(&request(Policy::Signer, 2)),
        Err(Error::SecurityVersionTooNew {
            requested: 2,
            current: 1
        })
    ));
    let from_v2 = seal(&v2, &request(Policy::Signer, 2), b"new", b"").expect("seal");
    assert!(matches!(
        unseal(&v1, &from_v2, b""),
        Err(SealError::Platform(Error::SecurityVersionTooNew { .. }))
    ));
}

#[test]
fn a_damaged_root_secret_is_reported_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(sim(dir.path(), b"x", 1));
    std::fs::write(dir.path().join("simulation-root.key"), [1u8; 31]).expect("write");
    let err = Simulation::open(dir.path(), b"x", b"", 1).expect_err("damaged");
    assert!(
        err.to_string().contains("must be 32 bytes, found 31"),
        "{err}"
    );
}

/// A directory laid out like Gramine's `/dev/attestation`, with a report for a known identity.
fn fake_gramine(attestation_type: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::write(
        root.join("attestation_type"),
        format!("{attestation_type}\n"),
    )
    .expect("write");
    let mut report = vec![0u8; 432];
    report[48] = 0x01;
    report[64..96].copy_from_slice(&[0xAA; 32]);
    report[128..160].copy_from_slice(&[0xBB; 32]);
    report[256..258].copy_from_slice(&9u16.to_le_bytes());
    report[258..260].copy_from_slice(&4u16.to_le_bytes());
    std::fs::write(root.join("report"), &report).expect("write");
    std::fs::write(root.join("user_report_data"), [0u8; 64]).expect("write");
    std::fs::create_dir(root.join("keys")).expect("mkdir");
    std::fs::write(root.join("keys/_sgx_mrenclave"), [3u8; 16]).expect("write");
    std::fs::write(root.join("keys/_sgx_mrsigner"), [4u8; 16]).expect("write");
    dir
}

#[test]
fn gramine_identity_keys_and_errors_come_from_its_files() {
    let dir = fake_gramine("dcap");
    let g = Gramine::open(dir.path()).expect("open");
    let id = g.identity();
    assert_eq!(
        (
            id.measurement,
            id.signer,
            id.product_id,
            id.security_version,
            id.debug
        ),
        ([0xAA; 32], [0xBB; 32], 9, 4, false)
    );
    let k1 = g.sealing_key(&request(Policy::Signer, 4)).expect("key");
    let k2 = g.sealing_key(&request(Policy::Signer, 4)).expect("key");
    assert_eq!(k1.bytes(), k2.bytes());
    assert_ne!(
        k1.bytes(),
        g.sealing_key(&request(Policy::Measurement, 4))
            .expect("key")
            .bytes()
    );
    let blob = seal(&g, &request(Policy::Signer, 4), b"data", b"").expect("seal");
    assert_eq!(*unseal(&g, &blob, b"").expect("unseal"), b"data");
    assert!(matches!(
        g.sealing_key(&request(Policy::Signer, 5)),
        Err(Error::SecurityVersionTooNew { .. })
    ));
    assert!(matches!(
        g.sealing_key(&request(Policy::Signer, 3)),
        Err(Error::Unsupported(_))
    ));
    // Wrong sizes are errors, not silently truncated keys.
    std::fs::write(dir.path().join("keys/_sgx_mrsigner"), [4u8; 15]).expect("write");
    let err = g
        .sealing_key(&request(Policy::Signer, 4))
        .expect_err("short key");
    assert!(err.to_string().contains("16 bytes, found 15"), "{err}");
    // The report data written reaches the file; a quote that does not carry it is refused.
    let rd = report_data_for_nonce(b"n");
    let simulated = sim(tempfile::tempdir().expect("tmp").path(), b"x", 1)
        .quote(&[9; 64])
        .expect("quote");
    std::fs::write(dir.path().join("quote"), simulated).expect("write");
    let err = g.quote(&rd).expect_err("mismatched quote");
    assert!(
        err.to_string().contains("does not carry the report data"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("user_report_data")).expect("read"),
        rd
    );
}

#[test]
fn gramine_without_attestation_or_files_says_so() {
    let err =
        Gramine::open(std::path::Path::new("/nonexistent/dev/attestation")).expect_err("missing");
    assert!(matches!(err, Error::NotGramine(_)));
    let dir = fake_gramine("none");
    let g = Gramine::open(dir.path()).expect("open");
    assert!(matches!(g.quote(&[0; 64]), Err(Error::Unsupported(_))));
    std::fs::write(dir.path().join("report"), [0u8; 100]).expect("write");
    let err = Gramine::open(dir.path()).expect_err("short report");
    assert!(err.to_string().contains("432 bytes, found 100"), "{err}");
}
