# rpcgate in a container. Build: docker build -t rpcgate .
# Run:   docker run -p 8080:8080 -p 9901:9901 -v $PWD/rpcgate.toml:/etc/rpcgate/rpcgate.toml rpcgate
# Reload: docker kill -s HUP <container>   Rotate logs: docker kill -s USR1 <container>
# (Not built in CI: the CI machines have no Docker engine. docs/operations.md §10.)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p rpcgate

FROM debian:bookworm-slim
COPY --from=build /src/target/release/rpcgate /usr/local/bin/rpcgate
# The listener and the admin API of the config the image is run with; bind them to
# 0.0.0.0 in the file to reach them from outside the container.
EXPOSE 8080 9901
# SIGTERM (docker stop) drains: keep `docker stop -t` above server.drain_timeout (30 s).
STOPSIGNAL SIGTERM
# Exit 0 while the admin API answers (needs [admin] address = "0.0.0.0:9901" or 127.0.0.1).
HEALTHCHECK --interval=10s --timeout=3s CMD ["rpcgate", "status", "--admin", "127.0.0.1:9901"]
USER 65534:65534
ENTRYPOINT ["rpcgate"]
CMD ["run", "-c", "/etc/rpcgate/rpcgate.toml"]
