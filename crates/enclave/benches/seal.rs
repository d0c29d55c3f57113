//! Seal and unseal throughput for 4 KiB blobs on the simulation platform, next to raw AES-256-GCM with
//! an already derived key (what sealing adds: the key derivation per call and the header).
//!
//! Run: `cargo bench -p enclave --bench seal`

use std::hint::black_box;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enclave::{KeyRequest, Platform, Policy, Simulation, seal, unseal};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulation::open(dir.path(), b"bench binary", b"", 1).expect("simulation");
    let request = KeyRequest {
        policy: Policy::Signer,
        security_version: 1,
        key_id: [1; 32],
    };
    let data = vec![0x5au8; 4096];
    let blob = seal(&sim, &request, &data, b"aad").expect("seal");
    let key = sim.sealing_key(&request).expect("key");
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("key");
    let nonce = [7u8; 12];
    let raw = cipher
        .encrypt(Nonce::from_slice(&nonce), data.as_slice())
        .expect("encrypt");

    let mut g = c.benchmark_group("seal_4KiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("seal", |b| {
        b.iter(|| seal(&sim, &request, black_box(&data), b"aad").expect("seal"))
    });
    g.bench_function("unseal", |b| {
        b.iter(|| unseal(&sim, black_box(&blob), b"aad").expect("unseal"))
    });
    g.bench_function("raw_aes_gcm_encrypt", |b| {
        b.iter(|| {
            cipher
                .encrypt(Nonce::from_slice(&nonce), black_box(data.as_slice()))
                .expect("encrypt")
        })
    });
    g.bench_function("raw_aes_gcm_decrypt", |b| {
        b.iter(|| {
            cipher
                .decrypt(Nonce::from_slice(&nonce), black_box(raw.as_slice()))
                .expect("decrypt")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
