# The kind example's origin (examples/kind/origin.yaml): Versity S3 Gateway, built from its Go
# module at the version the tests pin (tests/cluster/tools.sh).
#   docker build -f examples/kind/origin.Dockerfile -t localhost/edgefleet/versitygw:v1.8.0 .
FROM golang:1.26-bookworm AS build
RUN CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false" \
    go install -ldflags "-s -w -X main.Version=v1.8.0 -X main.Build=v1.8.0" \
    github.com/versity/versitygw/cmd/versitygw@v1.8.0

# The same base as the operator and edge images: CA certificates, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /go/bin/versitygw /usr/local/bin/versitygw
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/versitygw"]
