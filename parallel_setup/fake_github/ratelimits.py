"""The primary rate limit: per-resource pools, their headers and ``GET /rate_limit``."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple


RATE_LIMIT_WINDOW = 3600


class RateLimitsMixin:
    """Rate-limit pools (``core``, ``graphql``, ``search``)."""

    def set_rate_limit(self, remaining: Optional[int] = None, limit: Optional[int] = None,
                       reset: Optional[int] = None, resource: Optional[str] = None) -> None:
        """Set the primary rate limit pool(s): ``core``, ``graphql`` (default: all)."""
        with self._lock:
            for name, pool in self._pools.items():
                if resource is not None and name != resource:
                    continue
                if limit is not None:
                    pool["limit"] = int(limit)
                if remaining is not None:
                    pool["remaining"] = int(remaining)
                if reset is not None:
                    pool["reset"] = int(reset)

    def _pool(self, name: str) -> Dict[str, int]:
        pool = self._pools[name]
        now = int(time.time())
        if now >= pool["reset"]:
            pool["remaining"] = pool["limit"]
            pool["reset"] = now + RATE_LIMIT_WINDOW
        return pool

    def _rate_headers(self, resource: str, remaining: Optional[int] = None) -> List[Tuple[str, str]]:
        with self._lock:
            pool = self._pool(resource)
            left = pool["remaining"] if remaining is None else remaining
            return [
                ("X-RateLimit-Limit", str(pool["limit"])),
                ("X-RateLimit-Remaining", str(left)),
                ("X-RateLimit-Used", str(pool["limit"] - left)),
                ("X-RateLimit-Reset", str(pool["reset"])),
                ("X-RateLimit-Resource", resource),
            ]

    def _rate_limit_document(self) -> Dict[str, Any]:
        with self._lock:
            resources = {}
            for name in self._pools:
                pool = self._pool(name)
                resources[name] = {"limit": pool["limit"], "used": pool["limit"] - pool["remaining"],
                                   "remaining": pool["remaining"], "reset": pool["reset"]}
            return {"resources": resources, "rate": dict(resources["core"])}
