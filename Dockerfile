# Build the outhook binary, then ship it on a slim base as a user without privileges.
#
# Every COPY below is checked by tests/container.rs: the files it lays down must form a
# workspace that loads, so a new workspace member or a new embedded file needs its COPY
# here (the test says which).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY bench ./bench
COPY migrations ./migrations
COPY src ./src
# The registry and the target folder are cache mounts: after a source change only
# outhook itself compiles again, its dependencies come from the cache. They are not part
# of the image, so the binary is copied out of the target folder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin outhook \
    && install -D --strip target/release/outhook /out/outhook

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 outhook \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/outhook --create-home \
       --shell /usr/sbin/nologin outhook
COPY --from=build /out/outhook /usr/local/bin/outhook
# A numeric user, so that a platform can tell without reading /etc/passwd that it is not
# root. Its home holds the SQLite file when DATABASE_URL is left at its default.
USER 10001:10001
WORKDIR /var/lib/outhook
# Inside a container the API must listen on the container's interfaces to be reachable
# through a published port; publishing decides who can reach it.
ENV OUTHOOK_BIND=0.0.0.0:8080
EXPOSE 8080
# `outhook healthcheck` asks /readyz (the database is reachable) on the bind address.
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 \
    CMD ["outhook", "healthcheck"]
ENTRYPOINT ["outhook"]
CMD ["serve"]
