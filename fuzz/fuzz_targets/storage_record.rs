//! Storage records (a value's version and ciphertext, as stored in `storage.redb`, which the host
//! can edit): any bytes decoded; a record that decodes encodes back to the same bytes, and any
//! record survives encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::Record;

fuzz_target!(|data: &[u8]| {
    let version = Record::version_of(data);
    match Record::decode(data.to_vec()) {
        Some(record) => {
            assert_eq!(Some(record.version), version);
            assert_eq!(record.encode(), data);
        }
        None => assert_eq!(version, None),
    }
    let (head, rest) = data.split_at(data.len().min(8));
    let mut v = [0u8; 8];
    v[..head.len()].copy_from_slice(head);
    let record = Record {
        version: u64::from_le_bytes(v),
        ciphertext: rest.to_vec(),
    };
    assert_eq!(Record::decode(record.encode()), Some(record));
});
