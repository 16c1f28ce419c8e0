# syntax=docker/dockerfile:1
#
# The onbehalf image: one static binary (sidecar, webhook, connect server and
# tools) on distroless, running as the non-root user 65532 with nothing else
# in the image (no shell, no package manager). The Helm chart runs it with a
# read-only root filesystem and no capabilities.
#
#   docker build -t onbehalf:dev --build-arg VERSION=$(git describe --always) .
#
# Without Docker or a registry, `make image` builds the same image with buildah
# (tools/image/build.sh: scratch, the static binary, the CA bundle, passwd and
# group with nonroot) and checks it (tools/image/check.sh).
#
# Multi-platform builds (buildx) cross-compile: the build stage runs on the
# builder's platform and sets GOOS/GOARCH from the target's.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/onbehalf ./cmd/onbehalf

# static: CA certificates, /etc/passwd with nonroot, tzdata; no libc needed
# (CGO_ENABLED=0).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/onbehalf /onbehalf
USER 65532:65532
ENTRYPOINT ["/onbehalf"]
CMD ["--help"]
