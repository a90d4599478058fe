# syntax=docker/dockerfile:1
#
# Container image for the ork controller (`ork controller`): a multi-stage build that compiles the
# release binary in the official Rust image and ships it alone on distroless.
#
#   docker build --build-arg VERSION="$(cargo metadata --no-deps --format-version 1 | jq -r '.packages[0].version')" \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg SOURCE=<repository URL> -t ork .
#
# BuildKit is required (the default builder since Docker 23; `DOCKER_BUILDKIT=1` before that) for the
# cache mount below. Lint with scripts/lint-dockerfile.sh. The build context is limited by .dockerignore
# to Cargo.toml, Cargo.lock, src/ and benches/.

# ---------------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------------
# The official Rust image, pinned to the exact toolchain the project is developed and tested with
# (rustc 1.95.0; Cargo.toml's rust-version is only the floor), so the image is built by the same
# compiler as CI's binary. Bookworm on purpose: the runtime below is distroless Debian 12 (bookworm,
# glibc 2.36), and a binary linked against a newer glibc (trixie's) could need symbol versions the
# runtime does not have. The slim variant still has gcc and libc6-dev, which is all the native code
# needs: ring's C/assembly and the final link. No OpenSSL headers, because ork uses rustls.
FROM rust:1.95.0-slim-bookworm AS build

WORKDIR /build

# Dependency layer: build every dependency against a stub crate that has only the manifest and the
# lock file, so this layer (the bulk of the build time) is reused until Cargo.toml or Cargo.lock
# changes; edits under src/ only rebuild the ork crate below. benches/ comes along because Cargo.toml
# declares [[bench]] targets and cargo refuses to parse the manifest when their files are missing,
# even for `--bin ork` (the benches are not compiled). The cargo registry is a BuildKit cache mount:
# crate downloads survive a lock-file change, and the mount is kept out of the image layers.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin ork

# The real sources. `touch` makes them newer than the stub's build record: COPY keeps the context's
# modification times, which may be older than the stub build, and cargo would then reuse the stub.
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin ork

# ---------------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------------
# distroless "cc": glibc, libgcc_s (Rust's unwinder needs it, so the "static" image would not do),
# CA certificates and tzdata, and nothing else: no shell, no package manager. The controller needs
# none of those; it only talks HTTPS to the API server. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

# Image metadata (OCI annotations). VERSION, REVISION and SOURCE come from the build (see the top);
# the defaults mark a local, unreleased build.
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="ork" \
      org.opencontainers.image.description="A Kubernetes-native workflow orchestrator: the ork controller runs each task attempt of a Run as a batch/v1 Job" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# Only the binary, owned by root so that the unprivileged process cannot replace it.
COPY --from=build /build/target/release/ork /ork

# Numeric uid:gid (distroless' "nonroot" user), so Kubernetes can enforce runAsNonRoot without
# looking the name up in the image.
USER 65532:65532

# The controller's HTTP port: /healthz, /readyz and /metrics.
EXPOSE 8080

# Exec form (there is no shell to run anything else). The default command is the controller; any
# other subcommand works too, e.g. `docker run --rm ork crds` prints the CRDs.
ENTRYPOINT ["/ork"]
CMD ["controller"]
