"""Verifies signatures made by Cloister's crypto service with an independent implementation
(pyca/cryptography). Input: a JSON file of {algorithm, public_key, message, signature, der} entries,
hex-encoded. Exits non-zero, naming the entry, if any signature does not verify."""

import json
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def verify(entry):
    public = bytes.fromhex(entry["public_key"])
    message = bytes.fromhex(entry["message"])
    signature = bytes.fromhex(entry["signature"])
    algorithm = entry["algorithm"]
    if algorithm == "ed25519":
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return
    curve = {"secp256k1": ec.SECP256K1(), "p256": ec.SECP256R1()}[algorithm]
    key = ec.EllipticCurvePublicKey.from_encoded_point(curve, public)
    if not entry["der"]:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        signature = encode_dss_signature(r, s)
    key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def main():
    entries = json.load(open(sys.argv[1]))
    for i, entry in enumerate(entries):
        try:
            verify(entry)
        except Exception as e:  # noqa: BLE001 - report which entry failed, whatever the reason
            print(f"entry {i} ({entry['algorithm']}, der={entry['der']}) does not verify: {e!r}")
            sys.exit(1)
    print(f"{len(entries)} signatures verified")


main()
