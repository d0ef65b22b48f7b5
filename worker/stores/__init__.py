"""Stores that are not SQL databases: one interface (``base.Store``), one module per kind.

``open_store(name, service)`` gives the ``Store`` of a registered Redis, S3 or http service;
``preview`` is its dry run, ``erase`` its erasure, ``verify`` a fresh count. Each reports
in the SQL engine's shape (``models.erasure.ErasureReport``).
"""

from __future__ import annotations

from models.registry import HttpService, RedisService, StoreService
from models.settings import MissingDatabaseUrl, service_url
from worker.stores.base import Store
from worker.stores.exceptions import InvalidStoreSecret
from worker.stores.http import HttpStore
from worker.stores.redis import RedisStore
from worker.stores.s3 import S3Store

__all__ = ["HttpStore", "RedisStore", "S3Store", "Store", "open_store"]


def open_store(
    name: str,
    service: StoreService,
    url: str | None = None,
    *,
    subject_kind: str = "",
    job_id: str | None = None,
) -> Store:
    """The store of service ``name``. Its URL comes from the environment variable the
    registry names (``MissingDatabaseUrl`` when unset) unless ``url`` is given; an http
    service's secret likewise. ``subject_kind`` and ``job_id`` are what an http service
    is told (the other kinds need neither)."""
    address = url if url is not None else service_url(service.url_env)
    if isinstance(service, RedisService):
        return RedisStore(name, service, address)
    if isinstance(service, HttpService):
        try:
            secret = service_url(service.secret_env)
        except MissingDatabaseUrl:
            raise InvalidStoreSecret(service.secret_env) from None
        return HttpStore(name, service, address, secret, subject_kind=subject_kind, job_id=job_id)
    return S3Store(name, service, address, service.url_env)
