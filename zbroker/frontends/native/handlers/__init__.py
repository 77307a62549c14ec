"""The native request handlers: thin adapters from wire fields to typed service calls and back.

Each module holds one family of request types and a ``ROUTES`` list; :data:`ROUTES` is
the native router's whole table.
"""

from zbroker.frontends.native.handlers import admin, cluster, data, groups, quotas, versions

ROUTES = [*data.ROUTES, *admin.ROUTES, *groups.ROUTES, *cluster.ROUTES, *versions.ROUTES, *quotas.ROUTES]
