"""Front doors: each turns one protocol's requests into calls on the protocol-neutral services.

Front doors never import each other.  Each has a router table (request type -> handler
and version range) and builds a :class:`zbroker.context.RequestContext` for every request.
"""
