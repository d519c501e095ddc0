"""``python -m bridge.jetstream``: print the directory of the shipped JetStream definitions."""

from bridge.jetstream import directory

print(directory())
