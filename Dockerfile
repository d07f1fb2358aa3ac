# The berth image. Built by a user with internet access:
#
#   docker build -t berth .
#
# It is a drop-in for registry:2's image: the same port (5000), data volume
# (/var/lib/registry) and configuration file (/etc/docker/registry/config.yml,
# registry:2's own default), so REGISTRY_* variables and tutorial compose files
# work with only the image name changed. For berth's own configuration, run
# `serve --config /etc/berth/berth.toml` (or set BERTH_* variables).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY integration ./integration
COPY config ./config
RUN cargo build --release --locked --bin berth
# The data directory, to be owned by the unprivileged user below.
RUN mkdir -p /out/var/lib/registry

FROM debian:bookworm-slim
COPY --from=build /src/target/release/berth /usr/local/bin/berth
# CA certificates (the slim base has none): the S3 client verifies TLS against them.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY config/registry2.yml /etc/docker/registry/config.yml
COPY config/berth.toml /etc/berth/berth.toml
COPY --from=build --chown=65532:65532 /out/var/lib/registry /var/lib/registry
# No root inside: the volume is written by this user (named volumes take the
# directory's owner; a host directory needs `chown 65532:65532`).
USER 65532:65532
VOLUME /var/lib/registry
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s \
  CMD ["berth", "ready", "--config", "/etc/docker/registry/config.yml"]
ENTRYPOINT ["berth"]
CMD ["serve", "--config", "/etc/docker/registry/config.yml"]
