# Cloister's image: the binary and the CA certificates, nothing else (no shell, no curl).
#   docker build -t cloister .
#   docker run -p 8420:8420 -v cloister-data:/var/lib/cloister cloister
# The configuration (deploy/kubernetes/base/cloister.toml) listens on 0.0.0.0:8420 and keeps its data
# in /var/lib/cloister; mount your own at /etc/cloister/cloister.toml.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p cloister \
 && install -D -m 0755 target/release/cloister /out/usr/local/bin/cloister \
 && install -d -m 0700 /out/var/lib/cloister \
 && install -D -m 0644 deploy/kubernetes/base/cloister.toml /out/etc/cloister/cloister.toml

# The runtime needs glibc and libgcc_s only (what Gramine's manifest trusts too): distroless/cc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/usr/local/bin/cloister /usr/local/bin/cloister
COPY --from=build --chown=65532:65532 /out/var/lib/cloister /var/lib/cloister
COPY --from=build /out/etc/cloister/cloister.toml /etc/cloister/cloister.toml
# The oracle reads this one bundle, as in the enclave (docs/deploy-sgx.md).
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_DIR= \
    CLOISTER_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/cloister"]
EXPOSE 8420
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/cloister", "probe", "/livez"]
ENTRYPOINT ["/usr/local/bin/cloister", "run", "--config", "/etc/cloister/cloister.toml"]
