//! Hardware SGX quotes verified against Intel's collateral, with a real quote and its collateral
//! recorded from an SGX machine (fixtures/dcap/README.md says where they come from), checked at a
//! time inside the collateral's validity window.

use enclave::dcap::{
    Collateral, HardwareCheck, TcbPolicy, TcbStatus, parse_collateral, pck_identity,
    verify_hardware, verify_hardware_with_root,
};
use enclave::quote::{
    BODY_MR_ENCLAVE, BODY_REPORT_DATA, HEADER_LEN, Quote, QuoteError, Trust, Verified, check,
};
use enclave::{Platform, Simulation, report_data_for_nonce};

const QUOTE: &[u8] = include_bytes!("fixtures/dcap/sgx_quote");
const COLLATERAL: &[u8] = include_bytes!("fixtures/dcap/sgx_quote_collateral.json");
const TDX_QUOTE: &[u8] = include_bytes!("fixtures/dcap/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("fixtures/dcap/tdx_quote_collateral.json");
const IMPOSTOR_CHAIN: &str = include_str!("fixtures/dcap/impostor_chain.pem");
// The recorded quote and collateral re-signed under a test PKI (fixtures/dcap/make_test_pki.py):
// the only way to have a CRL that lists the quote's PCK certificate.
const TEST_ROOT: &[u8] = include_bytes!("fixtures/dcap/test_pki_root_ca.der");
const TEST_QUOTE: &[u8] = include_bytes!("fixtures/dcap/test_pki_quote");
const TEST_COLLATERAL: &[u8] = include_bytes!("fixtures/dcap/test_pki_collateral.json");
const TEST_COLLATERAL_REVOKED: &[u8] =
    include_bytes!("fixtures/dcap/test_pki_collateral_revoked.json");

/// 2025-07-01T00:00:00Z: inside the collateral's window (TCB info 2025-06-19 to 2025-07-19).
const INSIDE: u64 = 1_751_328_000;
/// 2025-08-01T00:00:00Z: after the TCB info and QE identity expired.
const AFTER: u64 = 1_754_006_400;
/// 2025-06-01T00:00:00Z: before they were issued.
const BEFORE: u64 = 1_748_736_000;

const STATUS: TcbStatus = TcbStatus::ConfigurationAndSWHardeningNeeded;

fn collateral() -> Collateral {
    parse_collateral(COLLATERAL).expect("the recorded collateral parses")
}

fn hardware(collateral: Collateral, allow: Vec<TcbStatus>) -> Trust {
    Trust {
        allow_simulation: false,
        hardware: Some(HardwareCheck {
            collateral,
            at_unix_secs: INSIDE,
            policy: TcbPolicy {
                allow,
                allow_debug: false,
            },
        }),
    }
}

#[test]
fn the_recorded_sgx_quote_verifies_with_its_true_tcb_status() {
    let verdict = verify_hardware(QUOTE, &collateral(), INSIDE).expect("verifies");
    assert_eq!(verdict.tcb_status, STATUS);
    assert_eq!(verdict.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(verdict.fmspc, "00A067110000");
    // The identity the verifier reports is the one in the quote's bytes.
    let parsed = Quote::parse(QUOTE).expect("parses");
    assert_eq!(verdict.body, parsed.body);
    assert!(!verdict.body.debug);
    // What identifies its collateral, read from the PCK certificate in the quote.
    let pck = pck_identity(QUOTE).expect("pck");
    assert_eq!(pck.fmspc, "00A067110000");
    assert!(pck.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(["processor", "platform"].contains(&pck.ca));
}

#[test]
fn a_tcb_status_other_than_up_to_date_is_refused_unless_allowed() {
    let strict = check(QUOTE, &hardware(collateral(), vec![]), None);
    assert_eq!(
        strict.err(),
        Some(QuoteError::TcbNotAccepted {
            status: STATUS,
            advisories: vec!["INTEL-SA-00289".into(), "INTEL-SA-00615".into()],
        })
    );
    let other = check(
        QUOTE,
        &hardware(collateral(), vec![TcbStatus::OutOfDate]),
        None,
    );
    assert!(matches!(other, Err(QuoteError::TcbNotAccepted { .. })));
    let (_, verified) =
        check(QUOTE, &hardware(collateral(), vec![STATUS]), None).expect("allowed status");
    assert!(matches!(verified, Verified::Hardware(v) if v.tcb_status == STATUS));
}

#[test]
fn a_revoked_status_is_never_accepted_and_debug_enclaves_need_consent() {
    let mut verdict = verify_hardware(QUOTE, &collateral(), INSIDE).expect("verifies");
    verdict.tcb_status = TcbStatus::Revoked;
    let all = TcbPolicy {
        allow: TcbStatus::ALL.to_vec(),
        allow_debug: true,
    };
    assert!(matches!(
        verdict.accepted_by(&all),
        Err(QuoteError::TcbNotAccepted {
            status: TcbStatus::Revoked,
            ..
        })
    ));
    verdict.tcb_status = TcbStatus::UpToDate;
    verdict.body.debug = true;
    assert_eq!(
        verdict.accepted_by(&TcbPolicy::default()),
        Err(QuoteError::DebugEnclave)
    );
    assert_eq!(verdict.accepted_by(&all), Ok(()));
}

#[test]
fn a_quote_with_one_flipped_byte_in_its_report_is_refused_as_a_bad_signature() {
    let mut bad = QUOTE.to_vec();
    bad[HEADER_LEN + BODY_MR_ENCLAVE] ^= 0x01;
    assert_eq!(
        verify_hardware(&bad, &collateral(), INSIDE),
        Err(QuoteError::BadSignature)
    );
}

#[test]
fn no_single_flipped_byte_anywhere_in_the_quote_verifies() {
    let collateral = collateral();
    let genuine = verify_hardware(QUOTE, &collateral, INSIDE).expect("verifies");
    // The quote carries a copy of Intel's root CA certificate at the end of its PCK chain; the
    // verifier ignores that copy and uses the root it pins, so a change there changes nothing.
    let root_copy = embedded_root(QUOTE);
    // Every 7th byte, across header, body, signature, QE report and certification data.
    for i in (0..QUOTE.len()).step_by(7) {
        let mut bad = QUOTE.to_vec();
        bad[i] ^= 0x40;
        let outcome = verify_hardware(&bad, &collateral, INSIDE);
        if root_copy.contains(&i) {
            assert!(
                outcome.as_ref().is_err() || outcome.as_ref() == Ok(&genuine),
                "byte {i} in the root's copy: {outcome:?}"
            );
        } else {
            assert!(outcome.is_err(), "byte {i} flipped still verifies");
        }
    }
}

/// The byte range of the last certificate of the quote's PEM chain.
fn embedded_root(quote: &[u8]) -> std::ops::Range<usize> {
    let begin = b"-----BEGIN CERTIFICATE-----";
    let start = quote
        .windows(begin.len())
        .rposition(|w| w == begin)
        .expect("a PEM chain");
    start..quote.len()
}

#[test]
fn report_data_that_does_not_match_the_expected_binding_is_refused() {
    let expected = report_data_for_nonce(b"the caller's nonce");
    assert_eq!(
        check(
            QUOTE,
            &hardware(collateral(), vec![STATUS]),
            Some(&expected)
        )
        .err(),
        Some(QuoteError::ReportDataMismatch)
    );
    let actual: [u8; 64] = QUOTE[HEADER_LEN + BODY_REPORT_DATA..HEADER_LEN + BODY_REPORT_DATA + 64]
        .try_into()
        .expect("64 bytes");
    assert!(check(QUOTE, &hardware(collateral(), vec![STATUS]), Some(&actual)).is_ok());
}

#[test]
fn collateral_checked_after_it_expired_or_before_it_was_issued_is_refused() {
    for at in [AFTER, BEFORE] {
        let err = verify_hardware(QUOTE, &collateral(), at).expect_err("out of its window");
        assert!(matches!(err, QuoteError::Expired(_)), "at {at}: {err}");
    }
}

#[test]
fn collateral_for_another_platform_is_refused() {
    let tdx = parse_collateral(TDX_COLLATERAL).expect("tdx collateral parses");
    let err = verify_hardware(QUOTE, &tdx, INSIDE).expect_err("another platform");
    assert!(
        matches!(&err, QuoteError::CollateralMismatch(why) if why.contains("TDX")),
        "{err}"
    );
    // SGX TCB info for another platform family (FMSPC): named before any signature is checked.
    let mut other = collateral();
    other.tcb_info = other.tcb_info.replace("00A067110000", "00906ED50000");
    let err = verify_hardware(QUOTE, &other, INSIDE).expect_err("another fmspc");
    assert!(
        matches!(&err, QuoteError::CollateralMismatch(why) if why.contains("00906ED50000")),
        "{err}"
    );
}

#[test]
fn a_chain_not_rooted_at_intels_sgx_root_ca_is_refused() {
    let mut tcb = collateral();
    tcb.tcb_info_issuer_chain = IMPOSTOR_CHAIN.to_owned();
    let err = verify_hardware(QUOTE, &tcb, INSIDE).expect_err("impostor tcb chain");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");

    let mut qe = collateral();
    qe.qe_identity_issuer_chain = IMPOSTOR_CHAIN.to_owned();
    let err = verify_hardware(QUOTE, &qe, INSIDE).expect_err("impostor qe chain");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");

    // CRLs from another issuer in place of the root CA's and the PCK CA's: the revocation status
    // of the chain cannot be established, so it is refused.
    let tdx = parse_collateral(TDX_COLLATERAL).expect("tdx collateral parses");
    let mut crl = collateral();
    crl.root_ca_crl = tdx.pck_crl.clone();
    let err = verify_hardware(QUOTE, &crl, INSIDE).expect_err("wrong root crl");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
    let mut crl = collateral();
    crl.pck_crl = tdx.pck_crl.clone();
    let err = verify_hardware(QUOTE, &crl, INSIDE).expect_err("wrong pck crl");
    assert!(
        matches!(&err, QuoteError::ChainUntrusted(why) if why.contains("RevocationStatus")),
        "{err}"
    );

    // A TCB info edited after Intel signed it.
    let mut edited = collateral();
    edited.tcb_info = edited.tcb_info.replace(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":18",
    );
    let err = verify_hardware(QUOTE, &edited, INSIDE).expect_err("edited tcb info");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
}

#[test]
fn a_simulation_quote_never_verifies_as_hardware_whatever_its_bytes_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulation::open(dir.path(), b"binary", b"[enclave]", 1).expect("simulation");
    let rd = report_data_for_nonce(b"n");
    let quote = sim.quote(&rd).expect("quote");
    assert_eq!(
        verify_hardware(&quote, &collateral(), INSIDE),
        Err(QuoteError::SimulationNotHardware)
    );
    // Hardware required: the simulation is refused even with collateral at hand.
    assert_eq!(
        check(
            &quote,
            &hardware(collateral(), TcbStatus::ALL.to_vec()),
            Some(&rd)
        )
        .err(),
        Some(QuoteError::SimulationNotAccepted)
    );
    // Its marks rewritten to Intel's QE vendor id and empty user data: still no PCK chain to
    // Intel's root, so still refused.
    let mut disguised = quote.clone();
    disguised[12..28].copy_from_slice(&dcap_qvl_vendor());
    disguised[28..48].fill(0);
    assert!(!Quote::parse(&disguised).expect("parses").is_simulation());
    let err = verify_hardware(&disguised, &collateral(), INSIDE).expect_err("disguised");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
    let err = check(
        &disguised,
        &hardware(collateral(), TcbStatus::ALL.to_vec()),
        Some(&rd),
    )
    .expect_err("disguised");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
}

/// Intel's QE vendor id, as the recorded quote's header carries it.
fn dcap_qvl_vendor() -> [u8; 16] {
    QUOTE[12..28].try_into().expect("16 bytes")
}

#[test]
fn a_hardware_quote_without_collateral_is_refused_with_what_to_do() {
    let trust = Trust {
        allow_simulation: true,
        hardware: None,
    };
    let err = check(QUOTE, &trust, None).expect_err("no collateral");
    assert_eq!(err, QuoteError::CollateralNeeded);
    assert!(
        err.to_string().contains("cloister quote collateral"),
        "{err}"
    );
}

#[test]
fn a_tdx_quote_and_unreadable_collateral_are_refused_by_name() {
    let err = verify_hardware(TDX_QUOTE, &collateral(), INSIDE).expect_err("tdx");
    assert!(
        matches!(&err, QuoteError::Malformed(why) if why.contains("version 4")),
        "{err}"
    );
    assert!(matches!(
        parse_collateral(b"{\"tcb_info\": 3}"),
        Err(QuoteError::CollateralMalformed(_))
    ));
    assert_eq!("uptodate".parse::<TcbStatus>(), Ok(TcbStatus::UpToDate));
    assert!(matches!(
        "Fine".parse::<TcbStatus>(),
        Err(QuoteError::UnknownTcbStatus(_))
    ));
}

#[test]
fn the_quote_re_signed_under_a_test_pki_verifies_under_that_root_as_the_real_one_does() {
    let clean = parse_collateral(TEST_COLLATERAL).expect("test collateral parses");
    let verdict = verify_hardware_with_root(TEST_QUOTE, &clean, INSIDE, TEST_ROOT)
        .expect("verifies under the test root");
    let real = verify_hardware(QUOTE, &collateral(), INSIDE).expect("verifies");
    // Same platform, same TCB status and advisories, same enclave: only the signers differ, so a
    // refusal of the revoked variant below is for the revocation and nothing else.
    assert_eq!(verdict, real);
    assert_eq!(verdict.tcb_status, STATUS);
    // The enclave's report, the attestation key's signature over it, the attestation key and the
    // QE report are the recorded bytes (only the signature data's length, the QE report's
    // signature and the certification data differ).
    let signed = HEADER_LEN + enclave::quote::BODY_LEN;
    let qe_report_end = signed + 4 + 64 + 64 + 384;
    assert_eq!(TEST_QUOTE[..signed], QUOTE[..signed]);
    assert_eq!(
        TEST_QUOTE[signed + 4..qe_report_end],
        QUOTE[signed + 4..qe_report_end]
    );
    assert_ne!(
        pck_identity(TEST_QUOTE).expect("pck").chain_pem,
        pck_identity(QUOTE).expect("pck").chain_pem
    );
}

#[test]
fn a_quote_whose_pck_certificate_is_listed_in_the_pck_crl_is_refused_as_revoked_by_name() {
    let clean = parse_collateral(TEST_COLLATERAL).expect("test collateral parses");
    let revoked = parse_collateral(TEST_COLLATERAL_REVOKED).expect("revoked collateral parses");
    // The two differ in their PCK CRL only, and the clean one verifies: the refusal below is for
    // the CRL's entry and nothing else.
    let mut only_the_crl = clean.clone();
    only_the_crl.pck_crl = revoked.pck_crl.clone();
    assert_eq!(only_the_crl, revoked);
    assert!(verify_hardware_with_root(TEST_QUOTE, &clean, INSIDE, TEST_ROOT).is_ok());

    let err = verify_hardware_with_root(TEST_QUOTE, &revoked, INSIDE, TEST_ROOT)
        .expect_err("a revoked PCK certificate");
    let QuoteError::Revoked(why) = &err else {
        panic!("refused, but not as revoked: {err}");
    };
    // The quote's PCK certificate, by name and serial (make_test_pki.py derives it from a fixed
    // label), and the CRL that lists it.
    assert!(
        why.contains("the PCK certificate \"Intel SGX PCK Certificate\"")
            && why.contains("serial 00:E9:32:DE:EE:4B:D9:C3:B6:81:AF:BF:35:85:5D:6A:F8:FA:0A:AD")
            && why.contains("is listed in the PCK CRL issued by \"Intel SGX PCK Processor CA\""),
        "{why}"
    );
    assert_eq!(err.code(), "revoked");

    // Collateral as `cloister quote collateral` writes it, with the PCK chain beside the CRLs (the
    // library checks that copy): named the same.
    let mut with_chain = revoked;
    with_chain.pck_certificate_chain = Some(pck_identity(TEST_QUOTE).expect("pck").chain_pem);
    let err = verify_hardware_with_root(TEST_QUOTE, &with_chain, INSIDE, TEST_ROOT)
        .expect_err("a revoked PCK certificate");
    assert_eq!(err, QuoteError::Revoked(why.clone()));
}

#[test]
fn the_quote_re_signed_under_a_test_pki_is_untrusted_under_intels_root() {
    let clean = parse_collateral(TEST_COLLATERAL).expect("test collateral parses");
    let err = verify_hardware(TEST_QUOTE, &clean, INSIDE).expect_err("not Intel's");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
    // What the CLI and the oracle call: Intel's root, whatever the policy accepts.
    let err = check(TEST_QUOTE, &hardware(clean, TcbStatus::ALL.to_vec()), None)
        .expect_err("not Intel's");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
    // With Intel's own collateral, the quote's PCK chain still leads to a root that is not
    // Intel's.
    let err = verify_hardware(TEST_QUOTE, &collateral(), INSIDE).expect_err("not Intel's");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
    // And the recorded quote under the test root: Intel's chain does not lead there.
    let err = verify_hardware_with_root(QUOTE, &collateral(), INSIDE, TEST_ROOT)
        .expect_err("Intel's collateral under the test root");
    assert!(matches!(err, QuoteError::ChainUntrusted(_)), "{err}");
}
