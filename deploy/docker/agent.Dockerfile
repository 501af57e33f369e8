# lagbalance-agent image (not built in CI yet). From the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t lagbalance-agent:0.1.0 .
FROM rust:1.85-slim AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lagbalance-agent --bin lagbalance-agent

# Distroless, non-root (uid 65532), no shell: matches the securityContext in deploy/k8s.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/lagbalance-agent /usr/local/bin/lagbalance-agent
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/lagbalance-agent"]
CMD ["run"]
