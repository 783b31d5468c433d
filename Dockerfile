# One multi-stage image for every role of the ledger and the order system, and the testbed CLI.
#   docker build -t testbed .                       (target `runtime`, used by docker-compose.yml)
#   docker build --target sim --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t testbed-sim .
#                                                   (the simulation build of the CLI: seed sweeps,
#                                                    run by .github/workflows/sim-sweep.yml and
#                                                    deploy/k8s/sweep-job.yaml alike)
FROM rust:1.95-bookworm AS source
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
# .git is not in the context: the commit that repro tokens and sweep summaries name comes from
# here (docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) ...).
ARG GIT_COMMIT=unknown
ENV TESTBED_GIT_COMMIT=${GIT_COMMIT}
COPY . .

FROM source AS build
RUN cargo build --release --bin ledger --bin orders --bin testbed \
 && cp target/release/ledger target/release/orders target/release/testbed /usr/local/bin/

# The simulation build: the same flags as the `cargo testbed` alias (.cargo/config.toml).
FROM source AS sim-build
RUN cargo build --release --config "build.rustflags=['--cfg','madsim']" --target-dir target/sim \
      --features sim --bin testbed \
 && cp target/sim/release/testbed /usr/local/bin/testbed

FROM debian:bookworm-slim AS sim
RUN useradd --system --uid 10001 app && mkdir /results && chown app /results
COPY --from=sim-build /usr/local/bin/testbed /usr/local/bin/testbed
USER app
WORKDIR /results
ENTRYPOINT ["testbed"]
CMD ["list"]

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 app
COPY --from=build /usr/local/bin/ledger /usr/local/bin/orders /usr/local/bin/testbed /usr/local/bin/
USER app
ENTRYPOINT []
CMD ["ledger", "--help"]
