"""Development tooling, kept out of the shipped package: the dev PKI (``pki``, ``pki_issue``),
a server's runtime configuration rendered from the entitlements (``nats_config``), a local
nats-server and a 3-node cluster (``server``, ``cluster``), JetStream provisioning
(``provision``) and the engine process wrapper (``engine``).

It lives at the repo root and is not in the wheel: ``./dev``, pytest and the examples find it
because the repo root is on ``sys.path`` (``./dev setup`` adds it to ``.venv`` with a ``.pth``
file; pytest adds the rootdir). Run its tools as ``python -m bridge_dev.pki`` or
``python -m bridge_dev.server``. The client (``bridge``) never imports it.
"""
