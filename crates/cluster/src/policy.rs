//! The admission policy: which enclave identities belong to the cluster, resolved once from
//! `[cluster] policy` and this node's own identity, and the decision on a quote's report body,
//! a pure function tested as a table.

use enclave::Identity;
use enclave::quote::ReportBody;
use runtime::config::ClusterPolicy;

/// The resolved policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Exactly this MRENCLAVE.
    Measurement {
        /// The MRENCLAVE admitted.
        measurement: [u8; 32],
    },
    /// This MRSIGNER and product id, at this security version or above.
    Signer {
        /// The MRSIGNER admitted.
        signer: [u8; 32],
        /// The ISVPRODID admitted.
        product_id: u16,
        /// The lowest ISVSVN admitted.
        min_security_version: u16,
    },
}

/// Why an identity is not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Another MRENCLAVE.
    #[error("its measurement (MRENCLAVE) is {found}, the cluster admits {expected}")]
    Measurement {
        /// Hex.
        expected: String,
        /// Hex.
        found: String,
    },
    /// Another MRSIGNER.
    #[error("its signer (MRSIGNER) is {found}, the cluster admits {expected}")]
    Signer {
        /// Hex.
        expected: String,
        /// Hex.
        found: String,
    },
    /// Another product.
    #[error("its product id (ISVPRODID) is {found}, the cluster admits {expected}")]
    ProductId {
        /// Admitted.
        expected: u16,
        /// Found.
        found: u16,
    },
    /// An older security version.
    #[error("its security version (ISVSVN) is {found}, the cluster admits {min} and above")]
    SecurityVersion {
        /// The lowest admitted.
        min: u16,
        /// Found.
        found: u16,
    },
    /// A debug enclave, to a cluster of production enclaves.
    #[error("it is a debug enclave (the host can read its memory), and this cluster's are not")]
    Debug,
}

impl Policy {
    /// The policy `config` asks for, relative to `own`, this node's identity.
    pub fn resolve(config: ClusterPolicy, own: &Identity) -> Policy {
        match config {
            ClusterPolicy::Measurement => Policy::Measurement {
                measurement: own.measurement,
            },
            ClusterPolicy::Signer {
                min_security_version,
            } => Policy::Signer {
                signer: own.signer,
                product_id: own.product_id,
                min_security_version: min_security_version.unwrap_or(own.security_version),
            },
        }
    }

    /// Whether the enclave `body` describes is admitted. A debug enclave is admitted only by a
    /// debug node (`own_debug`): the simulation is one, and so is a development enclave.
    pub fn admits(&self, body: &ReportBody, own_debug: bool) -> Result<(), Mismatch> {
        if body.debug && !own_debug {
            return Err(Mismatch::Debug);
        }
        match self {
            Policy::Measurement { measurement } => {
                if &body.mr_enclave != measurement {
                    return Err(Mismatch::Measurement {
                        expected: hex::encode(measurement),
                        found: hex::encode(body.mr_enclave),
                    });
                }
            }
            Policy::Signer {
                signer,
                product_id,
                min_security_version,
            } => {
                if &body.mr_signer != signer {
                    return Err(Mismatch::Signer {
                        expected: hex::encode(signer),
                        found: hex::encode(body.mr_signer),
                    });
                }
                if body.isv_prod_id != *product_id {
                    return Err(Mismatch::ProductId {
                        expected: *product_id,
                        found: body.isv_prod_id,
                    });
                }
                if body.isv_svn < *min_security_version {
                    return Err(Mismatch::SecurityVersion {
                        min: *min_security_version,
                        found: body.isv_svn,
                    });
                }
            }
        }
        Ok(())
    }

    /// The policy as recorded in the database and shown by `GET /v1/cluster`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Policy::Measurement { measurement } => serde_json::json!({
                "policy": "measurement",
                "measurement": hex::encode(measurement),
            }),
            Policy::Signer {
                signer,
                product_id,
                min_security_version,
            } => serde_json::json!({
                "policy": "signer",
                "signer": hex::encode(signer),
                "product_id": product_id,
                "min_security_version": min_security_version,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(m: u8, s: u8, prod: u16, svn: u16, debug: bool) -> ReportBody {
        ReportBody {
            mr_enclave: [m; 32],
            mr_signer: [s; 32],
            isv_prod_id: prod,
            isv_svn: svn,
            debug,
            report_data: [0; 64],
        }
    }

    fn own() -> Identity {
        Identity {
            platform: enclave::PlatformKind::Gramine,
            measurement: [1; 32],
            signer: [2; 32],
            product_id: 7,
            security_version: 3,
            debug: false,
        }
    }

    /// Every decision, as data: (policy, debug node, the body, admitted or the mismatch's kind).
    #[test]
    fn admission_decisions_as_a_table() {
        let measurement = Policy::resolve(ClusterPolicy::Measurement, &own());
        let signer = Policy::resolve(
            ClusterPolicy::Signer {
                min_security_version: None,
            },
            &own(),
        );
        let signer_from_2 = Policy::resolve(
            ClusterPolicy::Signer {
                min_security_version: Some(2),
            },
            &own(),
        );
        let cases: &[(&Policy, bool, ReportBody, Option<&str>)] = &[
            (&measurement, false, body(1, 2, 7, 3, false), None),
            // Another signer or product does not matter to the measurement policy.
            (&measurement, false, body(1, 9, 9, 0, false), None),
            (
                &measurement,
                false,
                body(5, 2, 7, 3, false),
                Some("measurement"),
            ),
            (&measurement, false, body(1, 2, 7, 3, true), Some("debug")),
            (&measurement, true, body(1, 2, 7, 3, true), None),
            (&signer, false, body(5, 2, 7, 3, false), None),
            (&signer, false, body(5, 2, 7, 4, false), None),
            (
                &signer,
                false,
                body(5, 2, 7, 2, false),
                Some("security_version"),
            ),
            (&signer, false, body(5, 9, 7, 3, false), Some("signer")),
            (&signer, false, body(5, 2, 8, 3, false), Some("product_id")),
            (&signer_from_2, false, body(5, 2, 7, 2, false), None),
            (
                &signer_from_2,
                false,
                body(5, 2, 7, 1, false),
                Some("security_version"),
            ),
        ];
        for (i, (policy, own_debug, body, expected)) in cases.iter().enumerate() {
            let got = policy.admits(body, *own_debug).err().map(|m| match m {
                Mismatch::Measurement { .. } => "measurement",
                Mismatch::Signer { .. } => "signer",
                Mismatch::ProductId { .. } => "product_id",
                Mismatch::SecurityVersion { .. } => "security_version",
                Mismatch::Debug => "debug",
            });
            assert_eq!(got, *expected, "case {i}");
        }
    }

    #[test]
    fn the_recorded_policy_names_what_it_admits() {
        let p = Policy::resolve(
            ClusterPolicy::Signer {
                min_security_version: Some(2),
            },
            &own(),
        );
        assert_eq!(
            p.to_json(),
            serde_json::json!({"policy": "signer", "signer": hex::encode([2u8; 32]),
                "product_id": 7, "min_security_version": 2})
        );
    }
}
