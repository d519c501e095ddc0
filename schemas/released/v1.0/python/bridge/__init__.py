"""Contract 1.0's generated Python, frozen: ``bridge.v1.*_pb2`` exactly as release 1.0 shipped them.

Not the client, and not importable beside the current ``bridge``: both register the same full
names (``bridge.v1.NewOrder``, ...) in protobuf's one descriptor pool. Use it in a process of its
own with this directory first on ``sys.path`` (``PYTHONPATH``), as
tests/unit/test_released_contract.py does. Regenerate (it must not change) with
``python scripts/gen_proto.py --schemas schemas/released/v1.0 --out schemas/released/v1.0/python``.
"""
