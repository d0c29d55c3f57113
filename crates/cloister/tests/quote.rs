//! `cloister quote verify` and `cloister quote collateral` through the binary, with a real SGX quote
//! and its collateral recorded from an SGX machine (crates/enclave/tests/fixtures/dcap/README.md),
//! checked at a time inside the collateral's validity window. No network: the PCCS is a local fake
//! serving the recorded collateral pieces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
/// Inside the collateral's window (TCB info issued 2025-06-19, next update 2025-07-19).
const INSIDE: &str = "2025-07-01T00:00:00Z";
const STATUS: &str = "ConfigurationAndSWHardeningNeeded";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../enclave/tests/fixtures/dcap")
        .join(name)
}

fn cloister(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cloister runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `quote verify QUOTE --collateral COLLATERAL --at INSIDE` with `extra` arguments.
fn verify(quote: &Path, collateral: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "quote",
        "verify",
        path(quote),
        "--collateral",
        path(collateral),
        "--at",
    ];
    if !extra.contains(&"--at") {
        args.push(INSIDE);
    } else {
        args.pop();
    }
    args.extend_from_slice(extra);
    cloister(&args)
}

#[test]
fn quote_verify_accepts_the_recorded_quote_with_its_true_tcb_status() {
    let (quote, collateral) = (fixture("sgx_quote"), fixture("sgx_quote_collateral.json"));
    let out = verify(&quote, &collateral, &["--allow-tcb", STATUS, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(verdict["verified"], true);
    assert_eq!(verdict["accepted"], true);
    assert_eq!(verdict["tcb_status"], STATUS);
    assert_eq!(
        verdict["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    assert_eq!(
        verdict["mr_enclave"],
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );
    assert_eq!(
        verdict["mr_signer"],
        "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    );
    assert_eq!(verdict["isv_prod_id"], 0);
    assert_eq!(verdict["isv_svn"], 0);
    assert_eq!(verdict["debug"], false);
    assert!(
        verdict["report_data"]
            .as_str()
            .expect("hex")
            .starts_with(&hex::encode("Hello, world!"))
    );

    // The same quote without accepting its status: verified, printed, and refused with exit 3.
    let out = verify(&quote, &collateral, &[]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    for line in [
        "signature chain:  verified to Intel's SGX root CA",
        "TCB status:       ConfigurationAndSWHardeningNeeded",
        "advisories:       INTEL-SA-00289, INTEL-SA-00615",
        "MRENCLAVE:        33d8736d",
        "debug:            false",
        "verdict:          REFUSED: the platform's TCB status is ConfigurationAndSWHardeningNeeded",
    ] {
        assert!(said.contains(line), "{line:?} missing in:\n{said}");
    }
    // Another status accepted is not this one.
    let out = verify(
        &quote,
        &collateral,
        &["--allow-tcb", "OutOfDate,SWHardeningNeeded"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // A hex copy of the quote reads the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let hex_quote = dir.path().join("quote.hex");
    std::fs::write(
        &hex_quote,
        hex::encode(std::fs::read(&quote).expect("quote")),
    )
    .expect("write");
    let out = verify(&hex_quote, &collateral, &["--allow-tcb", STATUS]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Each corrupted variant: exit code 2 (does not verify) or 4 (not the expected report data), with
/// a reason that names what failed.
#[test]
fn quote_verify_refuses_each_corrupted_variant_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (quote, collateral) = (fixture("sgx_quote"), fixture("sgx_quote_collateral.json"));
    let allow = ["--allow-tcb", STATUS];
    let refused = |out: Output, code: i32, reason: &str| {
        let said = text(&out);
        assert_eq!(out.status.code(), Some(code), "{said}");
        assert!(said.contains(reason), "{reason:?} missing in:\n{said}");
    };

    // One flipped byte in the enclave's measurement.
    let mut bytes = std::fs::read(&quote).expect("quote");
    bytes[48 + 64] ^= 0x01;
    let flipped = dir.path().join("flipped");
    std::fs::write(&flipped, &bytes).expect("write");
    refused(
        verify(&flipped, &collateral, &allow),
        2,
        "the quote's signature does not verify",
    );

    // Report data other than the caller expects.
    let mut args = allow.to_vec();
    args.extend(["--report-data", "00ff"]);
    refused(
        verify(&quote, &collateral, &args),
        4,
        "report data does not match",
    );

    // The collateral checked after it expired, and before it was issued.
    refused(
        verify(&quote, &collateral, &["--at", "2025-08-01T00:00:00Z"]),
        2,
        "not valid at the time checked",
    );
    refused(
        verify(&quote, &collateral, &["--at", "2025-06-01T00:00:00Z"]),
        2,
        "not valid at the time checked",
    );

    // Collateral for another platform (a TDX machine's).
    refused(
        verify(&quote, &fixture("tdx_quote_collateral.json"), &allow),
        2,
        "the collateral does not belong to this quote: the collateral's TCB info is for TDX",
    );

    // A TCB info signing chain that copies Intel's names but not Intel's root key.
    let mut impostor: Value =
        serde_json::from_slice(&std::fs::read(&collateral).expect("collateral")).expect("json");
    impostor["tcb_info_issuer_chain"] =
        Value::String(std::fs::read_to_string(fixture("impostor_chain.pem")).expect("pem"));
    let impostor_file = dir.path().join("impostor.json");
    std::fs::write(&impostor_file, impostor.to_string()).expect("write");
    refused(
        verify(&quote, &impostor_file, &allow),
        2,
        "do not lead to Intel's SGX root CA",
    );

    // A PCK CRL from another CA: the chain's revocation status cannot be established.
    let mut other_crl: Value =
        serde_json::from_slice(&std::fs::read(&collateral).expect("collateral")).expect("json");
    let tdx: Value =
        serde_json::from_slice(&std::fs::read(fixture("tdx_quote_collateral.json")).expect("tdx"))
            .expect("json");
    other_crl["pck_crl"] = tdx["pck_crl"].clone();
    let crl_file = dir.path().join("crl.json");
    std::fs::write(&crl_file, other_crl.to_string()).expect("write");
    refused(
        verify(&quote, &crl_file, &allow),
        2,
        "UnknownRevocationStatus",
    );

    // A simulation quote is never a hardware quote.
    let sim = enclave::Simulation::open(dir.path(), b"binary", b"[enclave]", 1).expect("sim");
    let sim_quote = dir.path().join("simulation.quote");
    let rd = enclave::report_data_for_nonce(b"n");
    std::fs::write(
        &sim_quote,
        enclave::Platform::quote(&sim, &rd).expect("quote"),
    )
    .expect("write");
    refused(
        verify(&sim_quote, &collateral, &allow),
        2,
        "the quote comes from the simulation platform: it can never verify as an SGX hardware quote",
    );

    // A TDX quote is not SGX's; unreadable collateral is named as such.
    refused(
        verify(&fixture("tdx_quote"), &collateral, &allow),
        2,
        "version 4",
    );
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"tcb_info\": 3}").expect("write");
    refused(
        verify(&quote, &junk, &allow),
        1,
        "the collateral is not readable",
    );

    // --json carries the reason as a stable code.
    let out = verify(&flipped, &collateral, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(verdict["verified"], false);
    assert_eq!(verdict["error"], "bad_signature");
}

/// What the fake PCCS was asked, in order.
type Asked = Arc<Mutex<Vec<String>>>;

#[derive(Clone)]
struct Pccs {
    collateral: Arc<Value>,
    asked: Asked,
}

/// Percent-encodes everything but letters and digits, as a PCCS encodes its issuer-chain headers.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn field(c: &Value, name: &str) -> String {
    c[name].as_str().expect(name).to_owned()
}

fn chain(name: &str, pem: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
        HeaderValue::from_str(&url_encoded(pem)).expect("value"),
    );
    headers
}

async fn pck_crl(State(p): State<Pccs>, RawQuery(q): RawQuery) -> (HeaderMap, Vec<u8>) {
    p.asked
        .lock()
        .expect("lock")
        .push(format!("pckcrl?{}", q.unwrap_or_default()));
    let c = &p.collateral;
    (
        chain(
            "SGX-PCK-CRL-Issuer-Chain",
            &field(c, "pck_crl_issuer_chain"),
        ),
        hex::decode(field(c, "pck_crl")).expect("hex"),
    )
}

async fn tcb(State(p): State<Pccs>, RawQuery(q): RawQuery) -> (HeaderMap, String) {
    p.asked
        .lock()
        .expect("lock")
        .push(format!("tcb?{}", q.unwrap_or_default()));
    let c = &p.collateral;
    (
        chain("TCB-Info-Issuer-Chain", &field(c, "tcb_info_issuer_chain")),
        format!(
            "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
            field(c, "tcb_info"),
            field(c, "tcb_info_signature")
        ),
    )
}

async fn qe_identity(State(p): State<Pccs>) -> (HeaderMap, String) {
    p.asked.lock().expect("lock").push("qe/identity".into());
    let c = &p.collateral;
    (
        chain(
            "SGX-Enclave-Identity-Issuer-Chain",
            &field(c, "qe_identity_issuer_chain"),
        ),
        format!(
            "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
            field(c, "qe_identity"),
            field(c, "qe_identity_signature")
        ),
    )
}

async fn root_ca_crl(State(p): State<Pccs>) -> String {
    p.asked.lock().expect("lock").push("rootcacrl".into());
    field(&p.collateral, "root_ca_crl")
}

/// A PCCS on a local port serving the recorded collateral, as the PCCS API (v4) does.
async fn fake_pccs(tcb_answers: bool) -> (String, Asked) {
    let collateral: Value = serde_json::from_slice(
        &std::fs::read(fixture("sgx_quote_collateral.json")).expect("collateral"),
    )
    .expect("json");
    let asked = Asked::default();
    let state = Pccs {
        collateral: Arc::new(collateral),
        asked: asked.clone(),
    };
    let api = "/sgx/certification/v4";
    let mut app = Router::new()
        .route(&format!("{api}/pckcrl"), get(pck_crl))
        .route(&format!("{api}/qe/identity"), get(qe_identity))
        .route(&format!("{api}/rootcacrl"), get(root_ca_crl));
    if tcb_answers {
        app = app.route(&format!("{api}/tcb"), get(tcb));
    } else {
        app = app.route(
            &format!("{api}/tcb"),
            get(|| async { StatusCode::NOT_FOUND }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app.with_state(state))
            .await
            .expect("serve")
    });
    (base, asked)
}

/// `quote collateral QUOTE --pccs URL`, on a blocking thread while the fake PCCS answers.
async fn collateral_from(quote: &Path, pccs: &str) -> Output {
    let args = vec![
        "quote".to_owned(),
        "collateral".to_owned(),
        path(quote).to_owned(),
        "--pccs".to_owned(),
        pccs.to_owned(),
    ];
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output())
        .await
        .expect("joined")
        .expect("cloister runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_collateral_fetches_from_a_pccs_what_verify_then_accepts() {
    let (base, asked) = fake_pccs(true).await;
    let quote = fixture("sgx_quote");
    let pccs = format!("{base}/sgx/certification/v4/");
    let out = collateral_from(&quote, &pccs).await;
    assert!(out.status.success(), "{}", text(&out));
    let fetched: Value = serde_json::from_slice(&out.stdout).expect("collateral JSON");
    // Asked for this platform's FMSPC, and for the CA that issued its PCK certificate.
    let asked = asked.lock().expect("lock").clone();
    assert!(
        asked.iter().any(|a| a == "tcb?fmspc=00A067110000"),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|a| a.starts_with("pckcrl?ca=") && a.ends_with("&encoding=der")),
        "{asked:?}"
    );
    // Every recorded piece comes back as it was served, the PCK chain from the quote besides.
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(fixture("sgx_quote_collateral.json")).expect("collateral"),
    )
    .expect("json");
    for (name, value) in recorded.as_object().expect("object") {
        assert_eq!(&fetched[name], value, "{name}");
    }
    assert!(
        fetched["pck_certificate_chain"]
            .as_str()
            .is_some_and(|c| c.contains("BEGIN CERTIFICATE"))
    );

    // What it wrote is what `quote verify` takes.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("collateral.json");
    std::fs::write(&file, &out.stdout).expect("write");
    let out = verify(&quote, &file, &["--allow-tcb", STATUS]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_collateral_names_the_pccs_answer_that_failed() {
    let (base, _) = fake_pccs(false).await;
    let out = collateral_from(&fixture("sgx_quote"), &base).await;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("/sgx/certification/v4/tcb?fmspc=00A067110000") && said.contains("404"),
        "{said}"
    );
    assert!(out.stdout.is_empty(), "nothing half-made on stdout: {said}");
}
