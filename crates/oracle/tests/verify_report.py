"""Verifies a Cloister oracle report without any of Cloister's code, from its documented encoding
(docs/api.md, "Oracle"): the signature is ECDSA P-256 over SHA-256 of the UTF-8 bytes of the
report's `payload` string, as 64-byte r || s in base64; the key is the payload's
`signer.public_key` (SEC1 uncompressed, base64); `request_hash` is SHA-256 of the request's
canonical JSON (keys sorted, no spaces); a script-derived value's `script_sha256` is SHA-256 of its
script's text in the request.

    python3 verify_report.py REPORT.json

Prints {"verified": true, "result": ..., ...} and exits 0, or says why not and exits 1. Needs
pyca/cryptography.
"""

import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils


def fail(why):
    print(json.dumps({"verified": False, "why": why}))
    sys.exit(1)


def main(path):
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    payload = report["payload"]
    fields = json.loads(payload)
    if fields.get("format") not in ("cloister-oracle-report/2", "cloister-oracle-report/1"):
        fail(f"unknown format {fields.get('format')!r}")
    if fields["signer"]["algorithm"] != "ecdsa-p256-sha256":
        fail(f"unknown algorithm {fields['signer']['algorithm']!r}")
    key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), base64.b64decode(fields["signer"]["public_key"])
    )
    signature = base64.b64decode(report["signature"])
    if len(signature) != 64:
        fail("the signature is not 64 bytes of r || s")
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, payload.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        fail("the signature does not verify")
    canonical = json.dumps(fields["request"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if hashlib.sha256(canonical.encode("utf-8")).hexdigest() != fields["request_hash"]:
        fail("request_hash is not the hash of the request in the report")
    # Format 2 marks each script-derived value with the SHA-256 of the script's exact text, which
    # the request in the same payload holds.
    for i, source in enumerate(fields["sources"]):
        if source.get("extraction") == "script":
            script = fields["request"]["sources"][i]["extract"]["script"]
            if hashlib.sha256(script.encode("utf-8")).hexdigest() != source["script_sha256"]:
                fail(f"sources[{i}].script_sha256 is not the hash of its script")
    print(
        json.dumps(
            {
                "verified": True,
                "result": fields["result"],
                "agreeing": fields["agreeing"],
                "sources": len(fields["sources"]),
                "scripts": [s.get("script_sha256") for s in fields["sources"]],
                "enclave": fields["enclave"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
