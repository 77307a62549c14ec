"""The native front door: zbroker's msgpack-over-ZeroMQ protocol (docs/protocol.md).

- :mod:`.router` -- the one place every native request is decoded, validated,
  authorized, timed and has its errors mapped;
- :mod:`.handlers` -- one module per family of request types, each a list of routes;
- :mod:`.peers` -- broker-to-broker messages out (follower fetches, forwarded admin
  requests, ISR changes, Raft) and their one correlation table;
- :mod:`.gossip` -- the heartbeat frames on the PUB/SUB sockets.

The wire codec itself, :mod:`zbroker.protocol`, is shared with the Python client.
"""
