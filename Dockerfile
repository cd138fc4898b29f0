# Build: docker build -t tripwire .
# Run:   docker run --rm -p 8080:8080 -p 127.0.0.1:9090:9090 -v tripwire-state:/var/lib/tripwire tripwire
# Paths: rules /etc/tripwire/rules.yaml (mount your own over it), state /var/lib/tripwire.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY rules.yaml ./
RUN cargo build --release --locked --bin tripwire

FROM debian:bookworm-slim
# tzdata: jiff reads the system zone database first (a bundled copy is the fallback).
# curl: the HEALTHCHECK below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tripwire \
    && mkdir -p /var/lib/tripwire \
    && chown tripwire:tripwire /var/lib/tripwire
COPY --from=build /src/target/release/tripwire /usr/local/bin/tripwire
COPY rules.yaml /etc/tripwire/rules.yaml
VOLUME ["/var/lib/tripwire"]
USER tripwire
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
# Exec form: tripwire is PID 1 and receives SIGTERM directly for a graceful stop.
ENTRYPOINT ["/usr/local/bin/tripwire"]
# SIGTERM (docker stop) drains requests and writes the state; give it time: docker stop -t 30.
STOPSIGNAL SIGTERM
CMD ["serve", "--rules", "/etc/tripwire/rules.yaml", "--state-dir", "/var/lib/tripwire", \
     "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090"]
