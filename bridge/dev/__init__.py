"""Development tooling: dev PKI, local nats-server, JetStream provisioning.

Not imported by the client.
"""
