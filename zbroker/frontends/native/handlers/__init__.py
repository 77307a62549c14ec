"""The native request handlers: thin adapters from wire fields to typed service calls and back.

Each module holds one family of request types and a ``ROUTES`` list; :data:`ROUTES` is
the native router's whole table.
"""

from zbroker.frontends.native.handlers import acls, admin, bridges, cluster, data, groups, quotas, users, versions

ROUTES = [*data.ROUTES, *admin.ROUTES, *groups.ROUTES, *cluster.ROUTES, *versions.ROUTES, *acls.ROUTES, *users.ROUTES,
          *quotas.ROUTES, *bridges.ROUTES]
