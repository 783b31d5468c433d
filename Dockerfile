# One multi-stage image for every role of the ledger and the order system, and the testbed CLI.
#   docker build -t testbed .          (the target `runtime`, used by docker-compose.yml)
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --bin ledger --bin orders --bin testbed \
 && cp target/release/ledger target/release/orders target/release/testbed /usr/local/bin/

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 app
COPY --from=build /usr/local/bin/ledger /usr/local/bin/orders /usr/local/bin/testbed /usr/local/bin/
USER app
ENTRYPOINT []
CMD ["ledger", "--help"]
