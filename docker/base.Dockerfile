# bridge-base:dev -- the locally made base image of the engine and Prometheus images: no
# distribution, nothing pulled. Its build context is staged by bridge_dev/images.py: the shared
# libraries `ldd` names for those binaries (glibc, libgcc_s, the dynamic loader) at the paths the
# loader looks for them, /etc/passwd and /etc/group with the non-root user `bridge` (uid 10001),
# the system CA bundle (rustls-native-certs reads it; the bridge trusts only its own CA) and a
# static busybox installed as /bin/wget for healthchecks.
#
#   python -m bridge_dev.images build     # builds it (cached), then the images FROM it
FROM scratch
COPY rootfs/ /
USER 10001:10001
