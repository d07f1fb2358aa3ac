# Builds the berth image used by docker-compose.yml.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY integration ./integration
RUN cargo build --release --locked --bin berth

FROM debian:bookworm-slim
COPY --from=build /src/target/release/berth /usr/local/bin/berth
COPY config/berth.toml /etc/berth/berth.toml
# Same data directory and port as registry:2, so its volumes and tutorials carry over.
ENV BERTH_STORAGE__ROOT=/var/lib/registry
VOLUME /var/lib/registry
EXPOSE 5000
ENTRYPOINT ["berth"]
CMD ["serve", "--config", "/etc/berth/berth.toml"]
