# bridge-prometheus:dev -- Prometheus from Debian's `prometheus` package (the binary ./dev setup
# unpacks into .dev/tools/bin), on the locally made bridge-base:dev. Context staged by
# bridge_dev/images.py.
FROM bridge-base:dev
COPY prometheus /usr/local/bin/prometheus
EXPOSE 9090
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=12 \
  CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/local/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
