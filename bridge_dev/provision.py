"""JetStream provisioning for the dev tooling: the wheel's :mod:`bridge.jetstream.provision`
(``bridge provision`` on the command line), re-exported for the callers in the repo."""

from bridge.jetstream.provision import CONSUMER_FILES, ProvisionError, provision

__all__ = ["CONSUMER_FILES", "ProvisionError", "provision"]
