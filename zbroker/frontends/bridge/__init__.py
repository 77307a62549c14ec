"""The bridge front door: plain ZeroMQ sockets in and out of topics, and mirrors of other
clusters (``[[bridge]]`` and ``[[mirror]]``, docs/bridge.md).

Each bridge and mirror is a sans-IO object that reaches the cluster through its own
:class:`~zbroker.frontends.bridge.gateway.Gateway`, as principal ``Bridge:NAME``; the
server gives it its sockets (:mod:`zbroker.net`) and a
:class:`~zbroker.frontends.bridge.host.BridgeHost` ticks it and reports its status.
"""
