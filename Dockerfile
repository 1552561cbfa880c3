# Build the outhook binary, then ship it on a slim base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked && strip target/release/outhook

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/outhook /usr/local/bin/outhook
WORKDIR /var/lib/outhook
EXPOSE 8080
ENTRYPOINT ["outhook"]
CMD ["serve"]
