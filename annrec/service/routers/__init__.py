"""The HTTP routes, one router per area: probes, indexes (reads and searches), writes, recommendations, admin."""

from annrec.service.routers import admin, indexes, probes, recommendations, writes

ROUTERS = (probes.router, indexes.router, recommendations.router, writes.router, admin.router)

__all__ = ["ROUTERS"]
