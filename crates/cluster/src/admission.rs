//! The admission exchange, a node's two sides of it (docs/cluster.md, "The admission exchange"):
//! as a member, a challenge and the check of a join request, answered with the cluster key wrapped
//! to the joiner's ephemeral key and a quote binding the answer; as a joiner, the request and the
//! check of the member's answer, after which the key is sealed here.

use base64::Engine as _;
use enclave::quote::{QuoteError, ReportBody, Trust};
use wire::cluster::{Challenge, JoinAnswer, JoinRequest};

use crate::Error;
use crate::exchange::{self, ClusterId, Ephemeral};
use crate::keys::Held;
use crate::node::{MAX_ADDRESS, MAX_NODE_ID, Node};
use crate::sealed::{self, Sealed};

/// A join that was admitted: the answer, and what the journal says about it.
#[derive(Debug, Clone)]
pub struct Admission {
    /// What the joiner gets.
    pub answer: JoinAnswer,
    /// The joiner's identity, as its quote proved it.
    pub identity: ReportBody,
}

/// The joiner's state between its request and the member's answer.
#[derive(Debug)]
pub struct Joining {
    ephemeral: Ephemeral,
    report_data: [u8; 64],
    /// What to send to the member.
    pub request: JoinRequest,
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Invalid(format!("{field} is not base64: {e}")))
}

fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Node {
    /// A challenge for a joiner, good for `exchange::CHALLENGE_LIFETIME_SECS`.
    pub fn challenge(&self) -> Result<Challenge, Error> {
        let held = self.current()?;
        Ok(Challenge {
            challenge: b64_encode(&exchange::challenge(&held.key, (self.clock)())),
            node: self.id.clone(),
        })
    }

    async fn quote(&self, report_data: [u8; 64]) -> Result<Vec<u8>, Error> {
        let platform = self.platform.clone();
        tokio::task::spawn_blocking(move || platform.quote(&report_data))
            .await
            .map_err(|e| Error::Internal(format!("the quote's task: {e}")))?
            .map_err(|e| Error::Internal(format!("this node cannot make a quote: {e}")))
    }

    /// Checks a peer's quote: it verifies (a simulation quote only on a simulation node), binds
    /// `report_data`, and shows an identity the policy admits.
    ///
    /// A hardware quote is verified to Intel's root with the collateral for its platform, fetched
    /// from `[cluster] pccs` for each check (admissions are rare, and the collateral changes), as
    /// of now, with the TCB statuses `[cluster] tcb_allow` accepts.
    async fn verify(&self, quote: &[u8], report_data: &[u8; 64]) -> Result<ReportBody, Error> {
        let mut trust = Trust {
            allow_simulation: self.simulation(),
            hardware: None,
        };
        let checked = match enclave::quote::check(quote, &trust, Some(report_data)) {
            Err(QuoteError::CollateralNeeded) => {
                let Some(hardware) = &self.hardware else {
                    return Err(Error::HardwareUnsupported);
                };
                let collateral = hardware.source.fetch(quote).await.map_err(|e| {
                    Error::Unavailable(format!(
                        "Intel's collateral for the quote cannot be fetched from the PCCS: {e}"
                    ))
                })?;
                trust.hardware = Some(enclave::dcap::HardwareCheck {
                    collateral,
                    at_unix_secs: (self.clock)(),
                    policy: hardware.policy.clone(),
                });
                enclave::quote::check(quote, &trust, Some(report_data))
            }
            checked => checked,
        };
        let (quote, _) = checked.map_err(Error::quote)?;
        self.policy
            .admits(&quote.body, self.platform.identity().debug)?;
        Ok(quote.body)
    }

    /// A member's side: checks a join request and answers with the cluster key wrapped to the
    /// joiner's ephemeral key and a quote binding the answer.
    pub async fn admit(&self, request: &JoinRequest) -> Result<Admission, Error> {
        let held = self.current()?;
        if request.node.is_empty() || request.node.len() > MAX_NODE_ID {
            return Err(Error::Invalid(format!(
                "node must be 1 to {MAX_NODE_ID} characters"
            )));
        }
        if request.address.len() > MAX_ADDRESS {
            return Err(Error::Invalid(format!(
                "address must be at most {MAX_ADDRESS} characters"
            )));
        }
        if self.db()?.is_removed(&request.node).await? {
            return Err(Error::Removed(request.node.clone()));
        }
        let challenge = b64("challenge", &request.challenge)?;
        exchange::check_challenge(&held.key, &challenge, (self.clock)())?;
        let joiner = exchange::public_key(&b64("public_key", &request.public_key)?)?;
        let quote = b64("quote", &request.quote)?;
        let request_data = exchange::request_report_data(&challenge, &joiner);
        let identity = self.verify(&quote, &request_data).await?;
        let wrapped = exchange::wrap(&held.key, &held.id, &joiner)?;
        let answer_data = exchange::answer_report_data(
            &request_data,
            &held.id,
            &wrapped.member,
            &wrapped.wrapped,
        );
        let own_quote = self.quote(answer_data).await?;
        Ok(Admission {
            answer: JoinAnswer {
                cluster_id: held.id.to_string(),
                node: self.id.clone(),
                public_key: b64_encode(&wrapped.member),
                wrapped_key: b64_encode(&wrapped.wrapped),
                quote: b64_encode(&own_quote),
                simulation: self.simulation(),
            },
            identity,
        })
    }

    /// A joiner's side, first half: an ephemeral key pair and a quote binding it with the
    /// member's challenge.
    pub async fn begin_join(&self, challenge: &Challenge) -> Result<Joining, Error> {
        let bytes = b64("challenge", &challenge.challenge)?;
        if bytes.len() != exchange::CHALLENGE_LEN {
            return Err(Error::BadAnswer(format!(
                "the member's challenge is {} bytes, expected {}",
                bytes.len(),
                exchange::CHALLENGE_LEN
            )));
        }
        let ephemeral = Ephemeral::new();
        let report_data = exchange::request_report_data(&bytes, ephemeral.public());
        let quote = self.quote(report_data).await?;
        let request = JoinRequest {
            challenge: challenge.challenge.clone(),
            public_key: b64_encode(ephemeral.public()),
            quote: b64_encode(&quote),
            node: self.id.clone(),
            address: self.address.clone(),
        };
        Ok(Joining {
            ephemeral,
            report_data,
            request,
        })
    }

    /// A joiner's side, second half: checks the member's quote (it binds this answer to this
    /// request, and the policy admits the member), opens the key, checks it against the
    /// database's record, seals it here and registers this node.
    pub async fn finish_join(
        &self,
        joining: Joining,
        answer: &JoinAnswer,
    ) -> Result<ClusterId, Error> {
        let db = self.db()?;
        let bad = |what: &str| Error::BadAnswer(what.to_owned());
        let id = ClusterId::parse(&answer.cluster_id)
            .ok_or_else(|| bad("cluster_id is not 32 hex digits"))?;
        let member: [u8; 32] = b64("public_key", &answer.public_key)?
            .try_into()
            .map_err(|_| bad("public_key is not 32 bytes"))?;
        let wrapped = b64("wrapped_key", &answer.wrapped_key)?;
        let quote = b64("quote", &answer.quote)?;
        let expected = exchange::answer_report_data(&joining.report_data, &id, &member, &wrapped);
        self.verify(&quote, &expected).await?;
        let key = joining.ephemeral.unwrap(&id, &member, &wrapped)?;
        let check = key.check(&id);
        let record = db.cluster().await?.ok_or_else(|| {
            Error::BadAnswer(format!(
                "the member answered for cluster {id}, and the database records no cluster"
            ))
        })?;
        if record.id != id.to_string() || record.key_check != check {
            return Err(Error::KeyCheck {
                received: hex::encode(check),
                recorded: hex::encode(&record.key_check),
            });
        }
        let _writing = self.writing.lock().await;
        if self.is_member() {
            return Err(Error::Exists(id.to_string()));
        }
        let held = Held::new(Sealed {
            id,
            key,
            generation: record.generation,
            previous: None,
        });
        sealed::store(self.platform.as_ref(), &self.dir, &held.sealed())?;
        self.hold(held)?;
        self.register().await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use enclave::Platform as _;
    use runtime::Classify as _;

    use super::*;

    /// A node on "hardware": the simulation's keys and quotes under an identity that says Gramine
    /// and not debug, which is all `verify` asks of its own platform.
    #[derive(Debug)]
    struct Hardware(enclave::Simulation, enclave::Identity);

    impl enclave::Platform for Hardware {
        fn identity(&self) -> &enclave::Identity {
            &self.1
        }
        fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, enclave::Error> {
            self.0.quote(report_data)
        }
        fn sealing_key(
            &self,
            request: &enclave::KeyRequest,
        ) -> Result<enclave::SealingKey, enclave::Error> {
            self.0.sealing_key(request)
        }
    }

    fn node(platform: Arc<dyn enclave::Platform>, dir: &std::path::Path) -> Node {
        Node::bare(platform, dir)
    }

    #[tokio::test]
    async fn a_hardware_member_refuses_simulation_quotes_and_hardware_ones_without_a_pccs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"code", b"config", 1).expect("sim");
        let quote = sim.quote(&[5; 64]).expect("quote");
        let identity = enclave::Identity {
            platform: enclave::PlatformKind::Gramine,
            debug: false,
            ..sim.identity().clone()
        };
        let other = tempfile::tempdir().expect("tempdir");
        let hardware = node(
            Arc::new(Hardware(
                enclave::Simulation::open(other.path(), b"code", b"config", 1).expect("sim"),
                identity,
            )),
            dir.path(),
        );
        let refused = hardware
            .verify(&quote, &[5; 64])
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.simulation_refused", "{refused}");

        // The same quote without its simulation marks is a hardware quote to the verifier: no
        // PCCS to fetch its collateral from, so unsupported, never accepted.
        let mut unmarked = quote.clone();
        unmarked[12..48].fill(0);
        let refused = hardware
            .verify(&unmarked, &[5; 64])
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.hardware_unsupported", "{refused}");

        // A simulation member admits it, having the same measurement, and only with its binding.
        let simulation = node(Arc::new(sim), dir.path());
        assert!(simulation.verify(&quote, &[5; 64]).await.is_ok());
        let refused = simulation
            .verify(&quote, &[6; 64])
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.report_data_mismatch", "{refused}");
    }

    /// A PCCS that answers with the collateral recorded for `sgx_quote`, or cannot be reached.
    #[derive(Debug)]
    struct RecordedPccs(Option<enclave::dcap::Collateral>);

    impl crate::CollateralSource for RecordedPccs {
        fn fetch<'a>(
            &'a self,
            _quote: &'a [u8],
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<enclave::dcap::Collateral, crate::CollateralError>,
                    > + Send
                    + 'a,
            >,
        > {
            let answer = self
                .0
                .clone()
                .ok_or_else(|| crate::CollateralError("connection refused".into()));
            Box::pin(async move { answer })
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../enclave/tests/fixtures/dcap/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// 2025-07-01T00:00:00Z: inside the recorded collateral's validity (fixtures/dcap/README.md).
    fn recorded_day() -> u64 {
        1_751_328_000
    }

    /// 2025-09-01T00:00:00Z: after the recorded TCB info's next update.
    fn two_months_later() -> u64 {
        1_756_684_800
    }

    /// A member whose own identity is the recorded quote's enclave (so `policy = "measurement"`
    /// admits it), verifying with `pccs` as the PCCS and `allow` as `[cluster] tcb_allow`.
    fn member_like(
        body: &ReportBody,
        pccs: RecordedPccs,
        allow: Vec<enclave::dcap::TcbStatus>,
        dir: &std::path::Path,
    ) -> Node {
        let identity = enclave::Identity {
            platform: enclave::PlatformKind::Gramine,
            measurement: body.mr_enclave,
            signer: body.mr_signer,
            product_id: body.isv_prod_id,
            security_version: body.isv_svn,
            debug: body.debug,
        };
        let sim = enclave::Simulation::open(dir, b"code", b"config", 1).expect("sim");
        let mut member = node(Arc::new(Hardware(sim, identity)), dir);
        member.hardware = Some(crate::node::HardwareTrust {
            source: Arc::new(pccs),
            policy: enclave::dcap::TcbPolicy {
                allow,
                allow_debug: body.debug,
            },
        });
        member.clock = recorded_day;
        member
    }

    /// A real SGX quote (recorded, fixtures/dcap/README.md) verifies to Intel's root with the
    /// collateral the PCCS serves, and is admitted only with its own binding, with its TCB status
    /// allowed, and while the collateral is current; a PCCS out of reach is a retryable 503.
    #[tokio::test]
    async fn a_hardware_member_with_a_pccs_verifies_a_hardware_quote_to_intels_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = fixture("sgx_quote");
        let collateral =
            enclave::dcap::parse_collateral(&fixture("sgx_quote_collateral.json")).expect("json");
        let body = enclave::quote::Quote::parse(&raw).expect("quote").body;
        let allowed = vec![enclave::dcap::TcbStatus::ConfigurationAndSWHardeningNeeded];
        let member = member_like(
            &body,
            RecordedPccs(Some(collateral.clone())),
            allowed.clone(),
            dir.path(),
        );
        let admitted = member
            .verify(&raw, &body.report_data)
            .await
            .expect("admitted");
        assert_eq!(admitted, body);

        // Another binding: it is not this exchange's quote.
        let refused = member.verify(&raw, &[7; 64]).await.expect_err("refused");
        assert_eq!(refused.code(), "cluster.report_data_mismatch", "{refused}");

        // Its platform's TCB status, not allowed.
        let strict = member_like(
            &body,
            RecordedPccs(Some(collateral.clone())),
            Vec::new(),
            dir.path(),
        );
        let refused = strict
            .verify(&raw, &body.report_data)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.bad_quote", "{refused}");
        assert!(
            refused
                .to_string()
                .contains("ConfigurationAndSWHardeningNeeded"),
            "{refused}"
        );

        // Collateral past its next update: a PCCS that serves stale collateral is not believed.
        let mut late = member_like(
            &body,
            RecordedPccs(Some(collateral)),
            allowed.clone(),
            dir.path(),
        );
        late.clock = two_months_later;
        let refused = late
            .verify(&raw, &body.report_data)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.bad_quote", "{refused}");
        assert!(refused.to_string().contains("expired"), "{refused}");

        // No PCCS answer: retryable.
        let unreachable = member_like(&body, RecordedPccs(None), allowed, dir.path());
        let refused = unreachable
            .verify(&raw, &body.report_data)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), "cluster.unavailable", "{refused}");
    }
}
