# nostr-sync: build with the same toolchain as CI, run as a non-root user.
#   docker build -t nostr-sync .
#   docker run --rm -e NOSTR_SYNC__RELAYS=wss://relay.example \
#     -e NOSTR_SYNC__DATABASE__URL=postgres://user:pass@db/nostr -p 9464:9464 nostr-sync
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
# The service alone: the tools crate (demo, bench, test relays) stays out of the image.
RUN cargo build --release --locked -p nostr-sync && strip target/release/nostr-sync

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/nostr-sync --create-home nostr-sync
COPY --from=build /src/target/release/nostr-sync /usr/local/bin/nostr-sync
COPY config/default.toml /etc/nostr-sync/config.toml
USER nostr-sync
WORKDIR /var/lib/nostr-sync
# The embedded default lives here unless database.url points elsewhere.
VOLUME /var/lib/nostr-sync
# /metrics, /livez, /readyz: listen on every interface inside the container.
ENV NOSTR_SYNC__HTTP__LISTEN=0.0.0.0:9464 NOSTR_SYNC_LOG_FORMAT=json
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["nostr-sync"]
CMD ["run"]
