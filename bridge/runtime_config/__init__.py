"""Runtime configuration: typed, versioned JSON documents in the config bucket, watched by both
sides and applied without a restart (``documents``: validation and diffs; ``routing``: which
pattern ``BridgeClient.send`` gives an order; ``watch``: the client's watch of the bucket)."""
