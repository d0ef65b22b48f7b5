"""Stores that are not SQL databases: one interface (``base.Store``), one module per kind.

``open_store(name, service)`` gives the ``Store`` of a registered Redis or S3 service;
``preview`` is its dry run, ``erase`` its erasure, ``verify`` a fresh count. Each reports
in the SQL engine's shape (``models.erasure.ErasureReport``).
"""

from __future__ import annotations

from models.registry import RedisService, S3Service
from models.settings import service_url
from worker.stores.base import Store
from worker.stores.redis import RedisStore
from worker.stores.s3 import S3Store

__all__ = ["RedisStore", "S3Store", "Store", "open_store"]


def open_store(name: str, service: RedisService | S3Service, url: str | None = None) -> Store:
    """The store of service ``name``. Its URL comes from the environment variable the
    registry names (``MissingDatabaseUrl`` when unset) unless ``url`` is given."""
    address = url if url is not None else service_url(service.url_env)
    if isinstance(service, RedisService):
        return RedisStore(name, service, address)
    return S3Store(name, service, address, service.url_env)
