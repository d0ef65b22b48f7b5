"""Key rotation of the job store's encryption: ``python -m tasks.resealing`` seals every
stored subject value again under the current key (``ERASER_JOB_STORE_ENCRYPTION_KEY``),
opening them with the retired keys (``ERASER_JOB_STORE_RETIRED_ENCRYPTION_KEYS``);
after it, the retired keys can be removed. See docs/privacy.md."""

from __future__ import annotations

import sys

from models.settings import get_settings
from models.store.database import JobStore
from models.store.purging import reseal_values
from worker.database import create_engine


def reseal(store: JobStore) -> int:
    """Reseal the store's values; returns how many changed."""
    with store.transaction() as session:
        return reseal_values(session, store.seal)


def main() -> int:
    store = JobStore(create_engine(get_settings().database_url))
    try:
        changed = reseal(store)
    finally:
        store.dispose()
    sys.stdout.write(f"{changed} subject value(s) sealed again under the current key\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
