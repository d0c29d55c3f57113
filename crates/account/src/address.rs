//! Neo N3 addresses of P-256 public keys: the single-signature verification script, its script hash, and the Base58Check address.

use p256::elliptic_curve::sec1::ToEncodedPoint;
use ripemd::Ripemd160;
use sha2::{Digest, Sha256};

/// Neo N3 `AddressVersion` (53): every standard N3 address starts with 'N'.
const ADDRESS_VERSION: u8 = 0x35;
/// `PUSHDATA1` opcode; followed by a one-byte length (33, a compressed key).
const PUSHDATA1: u8 = 0x0C;
/// `SYSCALL` opcode; followed by the 4-byte interop hash.
const SYSCALL: u8 = 0x41;
/// Interop hash of `System.Crypto.CheckSig`: the first 4 bytes of SHA-256 of that ASCII name.
const CHECK_SIG: [u8; 4] = [0x56, 0xE7, 0xB3, 0x27];

/// Length of a compressed SEC1 P-256 point.
const COMPRESSED_LEN: usize = 33;
/// Length of an uncompressed SEC1 P-256 point.
const UNCOMPRESSED_LEN: usize = 65;
/// `0x0C 0x21 <33-byte key> 0x41 <4-byte interop hash>`.
const SCRIPT_LEN: usize = 2 + COMPRESSED_LEN + 1 + CHECK_SIG.len();

/// Why a public key has no Neo N3 address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// Not a valid P-256 point in SEC1 encoding (33 bytes compressed or 65 bytes uncompressed).
    #[error(
        "not a valid P-256 public key: expected a SEC1 point on the curve, 33 bytes compressed (0x02/0x03) or 65 bytes uncompressed (0x04)"
    )]
    NotP256,
}

/// Neo N3 address of a SEC1-encoded P-256 public key (compressed 33 bytes or uncompressed 65 bytes).
pub fn neo_n3(public_key_sec1: &[u8]) -> Result<String, AddressError> {
    let script_hash = neo_n3_script_hash(public_key_sec1)?;
    // Base58Check(version || script hash), checksum = SHA-256(SHA-256(payload))[..4].
    let mut data = [0u8; 1 + 20 + 4];
    data[0] = ADDRESS_VERSION;
    data[1..21].copy_from_slice(&script_hash);
    let checksum = Sha256::digest(Sha256::digest(&data[..21]));
    data[21..].copy_from_slice(&checksum[..4]);
    Ok(bs58::encode(data).into_string())
}

/// The 20-byte script hash (as hashed, i.e. the byte order used inside the address).
///
/// Neo prints a `UInt160` as `0x` followed by these bytes reversed.
pub fn neo_n3_script_hash(public_key_sec1: &[u8]) -> Result<[u8; 20], AddressError> {
    let script = verification_script(public_key_sec1)?;
    let digest = Ripemd160::digest(Sha256::digest(script));
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&digest);
    Ok(hash)
}

/// The standard single-signature verification script of the key (always over its compressed form).
fn verification_script(public_key_sec1: &[u8]) -> Result<[u8; SCRIPT_LEN], AddressError> {
    // Only the encodings Neo accepts for a key: no identity, compact or hybrid forms.
    match (public_key_sec1.len(), public_key_sec1.first().copied()) {
        (COMPRESSED_LEN, Some(0x02 | 0x03)) | (UNCOMPRESSED_LEN, Some(0x04)) => {}
        _ => return Err(AddressError::NotP256),
    }
    let key =
        p256::PublicKey::from_sec1_bytes(public_key_sec1).map_err(|_| AddressError::NotP256)?;
    let point = key.to_encoded_point(true);
    let compressed: [u8; COMPRESSED_LEN] = point
        .as_bytes()
        .try_into()
        .map_err(|_| AddressError::NotP256)?;

    let mut script = [0u8; SCRIPT_LEN];
    script[0] = PUSHDATA1;
    script[1] = COMPRESSED_LEN as u8;
    script[2..2 + COMPRESSED_LEN].copy_from_slice(&compressed);
    script[2 + COMPRESSED_LEN] = SYSCALL;
    script[3 + COMPRESSED_LEN..].copy_from_slice(&CHECK_SIG);
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published compressed public key -> Neo N3 address pairs.
    const VECTORS: &[(&str, &str, &str)] = &[
        // neo-project/docs, docs/en-us/basic/concept/wallets.md ("Ordinary Address" example;
        // the N3 revision whose script ends in 4156e7b327), private key 087780053c37...942a0.
        (
            "neo-project/docs wallets.md",
            "03cdb067d930fd5adaa6c68545016044aaddec64ba39e548250eaea551172e535c",
            "NNLi44dJNXtDNSBkofB48aTVYtb1zZrNEs",
        ),
        // nspcc-dev/neo-go (Neo N3 node), internal/keytestcases/testcases.go, Arr[0]
        // (the NEP-2 test key, passphrase "city of zion").
        (
            "neo-go keytestcases Arr[0]",
            "02028a99826edc0c97d18e22b6932373d908d323aa7f92656a77ec26e8861699ef",
            "NPTmAHDxo6Pkyic8Nvu3kwyXoYJCvcCB6i",
        ),
        // nspcc-dev/neo-go, internal/keytestcases/testcases.go, Arr[1].
        (
            "neo-go keytestcases Arr[1]",
            "031d8e1630ce640966967bc6d95223d21f44304133003140c3b52004dc981349c9",
            "NMBfzaEq2c5zodiNbLPoohVENARMbJim1r",
        ),
        // nspcc-dev/neo-go, internal/keytestcases/testcases.go, Arr[2].
        (
            "neo-go keytestcases Arr[2]",
            "02232ce8d2e2063dce0451131851d47421bfc4fc1da4db116fca5302c0756462fa",
            "NfVdwyaJbijrWkRagrvs4eSRQUpP7WpukT",
        ),
        // neow3j/neow3j, test-tools/src/main/resources/test.properties (defaultAccount*).
        (
            "neow3j test.properties defaultAccount",
            "033a4d051b04b7fc0230d2b1aaedfd5a84be279a5361a7358db665ad7857787f1b",
            "NM7Aky765FG8NhhwtxjXRx7jEL1cnw7PBP",
        ),
    ];

    fn bytes(hex: &str) -> Vec<u8> {
        hex::decode(hex).expect("test vector is valid hex")
    }

    /// A `UInt160` as Neo prints it (`0x` + big-endian) -> the bytes as hashed.
    fn uint160_from_display(display: &str) -> [u8; 20] {
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&bytes(display.trim_start_matches("0x")));
        hash.reverse();
        hash
    }

    fn uncompressed(compressed: &[u8]) -> Vec<u8> {
        p256::PublicKey::from_sec1_bytes(compressed)
            .expect("valid point")
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn check_sig_interop_hash_is_sha256_prefix_of_its_name() {
        let digest = Sha256::digest(b"System.Crypto.CheckSig");
        assert_eq!(&digest[..4], &CHECK_SIG[..]);
        assert_eq!(CHECK_SIG, [0x56, 0xE7, 0xB3, 0x27]);
    }

    #[test]
    fn published_addresses() {
        for (source, key, address) in VECTORS {
            assert_eq!(neo_n3(&bytes(key)).as_deref(), Ok(*address), "{source}");
        }
    }

    #[test]
    fn published_verification_scripts() {
        // neo-project/docs, docs/en-us/basic/concept/wallets.md ("Script" row).
        assert_eq!(
            hex::encode(
                verification_script(&bytes(
                    "03cdb067d930fd5adaa6c68545016044aaddec64ba39e548250eaea551172e535c"
                ))
                .expect("valid key")
            ),
            "0c2103cdb067d930fd5adaa6c68545016044aaddec64ba39e548250eaea551172e535c4156e7b327"
        );
        // neow3j/neow3j, test-tools/src/main/resources/test.properties
        // (defaultAccountVerificationScript).
        assert_eq!(
            hex::encode(
                verification_script(&bytes(
                    "033a4d051b04b7fc0230d2b1aaedfd5a84be279a5361a7358db665ad7857787f1b"
                ))
                .expect("valid key")
            ),
            "0c21033a4d051b04b7fc0230d2b1aaedfd5a84be279a5361a7358db665ad7857787f1b4156e7b327"
        );
    }

    #[test]
    fn published_script_hashes() {
        // neow3j/neow3j, test-tools/src/main/resources/test.properties:
        // defaultAccountScriptHash=69ecca587293047be4c59159bf8bc399985c160d (big-endian display).
        assert_eq!(
            neo_n3_script_hash(&bytes(
                "033a4d051b04b7fc0230d2b1aaedfd5a84be279a5361a7358db665ad7857787f1b"
            )),
            Ok(uint160_from_display(
                "69ecca587293047be4c59159bf8bc399985c160d"
            ))
        );
        // neo-project/neo, tests/Neo.UnitTests/Wallets/UT_Wallet.cs, TestGetAccount1:
        // GetAccount(ECCurve.Secp256r1.G) has script hash 0x7efe7ee0d3e349e085388c351955e5172605de66.
        let generator = bytes("036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
        let expected = uint160_from_display("0x7efe7ee0d3e349e085388c351955e5172605de66");
        assert_eq!(neo_n3_script_hash(&generator), Ok(expected));
        // The same hash from the uncompressed generator (SEC 2 Gx || Gy).
        let generator_uncompressed = bytes(concat!(
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        ));
        assert_eq!(neo_n3_script_hash(&generator_uncompressed), Ok(expected));
    }

    #[test]
    fn address_embeds_the_script_hash_as_hashed() {
        for (source, key, address) in VECTORS {
            let key = bytes(key);
            let decoded = bs58::decode(address).into_vec().expect("valid base58");
            assert_eq!(decoded.len(), 25, "{source}");
            assert_eq!(decoded[0], ADDRESS_VERSION, "{source}");
            assert_eq!(
                neo_n3_script_hash(&key).as_ref().map(|h| &h[..]),
                Ok(&decoded[1..21]),
                "{source}"
            );
        }
    }

    #[test]
    fn uncompressed_key_gives_the_same_address() {
        // neo-project/docs, docs/en-us/basic/concept/wallets.md ("Public Key" example): the same
        // key (private key c7134d6f...2a6962) in both encodings.
        let compressed =
            bytes("035a928f201639204e06b4368b1a93365462a8ebbff0b8818151b74faab3a2b61a");
        let uncompressed_published = bytes(concat!(
            "045a928f201639204e06b4368b1a93365462a8ebbff0b8818151b74faab3a2b61a",
            "35dfabcb79ac492a2a88588d2f2e73f045cd8af58059282e09d693dc340e113f",
        ));
        let address = neo_n3(&compressed).expect("valid key");
        assert_eq!(neo_n3(&uncompressed_published), Ok(address));

        for (source, key, address) in VECTORS {
            let unc = uncompressed(&bytes(key));
            assert_eq!(unc.len(), UNCOMPRESSED_LEN, "{source}");
            assert_eq!(neo_n3(&unc).as_deref(), Ok(*address), "{source}");
            assert_eq!(
                neo_n3_script_hash(&unc),
                neo_n3_script_hash(&bytes(key)),
                "{source}"
            );
        }
    }

    #[test]
    fn address_shape() {
        for (source, key, _) in VECTORS {
            let address = neo_n3(&bytes(key)).expect("valid key");
            assert!(address.starts_with('N'), "{source}: {address}");
            assert_eq!(address.len(), 34, "{source}: {address}");
        }
    }

    #[test]
    fn invalid_keys_are_rejected() {
        let x_one = format!("02{}01", "00".repeat(31)); // x = 1: no point on P-256 has it
        let x_too_big = format!("03{}", "ff".repeat(32)); // x >= p
        let secp256k1_generator =
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let mut off_curve = bytes(concat!(
            "04",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        ));
        off_curve[64] ^= 0x01; // G with y + 1
        let valid = bytes(VECTORS[0].1);
        let mut compact = valid.clone();
        compact[0] = 0x05; // SEC1 "compact" form: not a Neo key encoding
        let mut bad_prefix = valid.clone();
        bad_prefix[0] = 0x04; // 33 bytes but tagged uncompressed
        let mut trailing = valid.clone();
        trailing.push(0x00);
        let mut hybrid = uncompressed(&valid);
        hybrid[0] = 0x06 | (hybrid[64] & 1); // hybrid form

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("identity", vec![0x00]),
            ("x only", valid[1..].to_vec()),
            ("truncated", valid[..32].to_vec()),
            ("trailing byte", trailing),
            ("x = 1", bytes(&x_one)),
            ("x >= p", bytes(&x_too_big)),
            ("secp256k1 generator", bytes(secp256k1_generator)),
            ("uncompressed off curve", off_curve),
            ("compact", compact),
            ("bad prefix", bad_prefix),
            ("hybrid", hybrid),
            ("all zero", vec![0u8; 33]),
        ];
        for (name, key) in cases {
            assert_eq!(neo_n3(&key), Err(AddressError::NotP256), "{name}");
            assert_eq!(
                neo_n3_script_hash(&key),
                Err(AddressError::NotP256),
                "{name}"
            );
        }
    }
}
