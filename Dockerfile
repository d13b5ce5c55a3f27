# syntax=docker/dockerfile:1
# FerroLB images, one per component:
#
#   docker build --target controller -t ghcr.io/ferrolb/ferrolb-controller:0.1.0 .
#   docker build --target speaker    -t ghcr.io/ferrolb/ferrolb-speaker:0.1.0 .
#
# Not built on the development machine (it has no container engine): the lab runs the same
# two binaries, ferrolb-controller and ferrolb-speaker, straight from target/debug (ADR 0005),
# and the chart's images name exactly these. Keep this file that simple.

# --- build: static musl binaries, so the runtime images need no libc -----------------------
ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
ARG TARGET=x86_64-unknown-linux-musl
RUN rustup target add ${TARGET}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target ${TARGET} \
        -p ferrolb-controller -p ferrolb-speaker \
 && mkdir /out \
 && cp target/${TARGET}/release/ferrolb-controller target/${TARGET}/release/ferrolb-speaker /out/

# --- controller: no shell, no packages, a non-root user (65532, as the chart sets) -----------
FROM gcr.io/distroless/static-debian12:nonroot AS controller
COPY --from=build /out/ferrolb-controller /usr/local/bin/ferrolb-controller
USER 65532:65532
EXPOSE 7472
ENTRYPOINT ["/usr/local/bin/ferrolb-controller"]

# --- speaker: the forwarder programs the kernel through `nft -f -` (ADR 0009), flushes UDP
# flows with `conntrack -D` and routes the userspace path's traffic with `ip rule`/`ip route`
# (ADR 0014), so it needs nftables, conntrack and iproute2; it runs as root with only NET_RAW,
# NET_ADMIN and NET_BIND_SERVICE (the chart).
FROM docker.io/library/debian:bookworm-slim AS speaker
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables conntrack iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ferrolb-speaker /usr/local/bin/ferrolb-speaker
EXPOSE 7473 7946/udp
ENTRYPOINT ["/usr/local/bin/ferrolb-speaker"]
