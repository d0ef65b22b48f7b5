"""The bakery's cache and object store, next to its twelve databases: a Redis cache of
forecasts (``forecast_cache``) and a bucket of exported reports (``reports``).

``make up`` and the compose file run both for real (a Redis database and SeaweedFS);
``eraser demo``, on the embedded default with no servers, leaves them out and says so.
``python -m examples.bakery.stores --cache-url URL --bucket NAME --tenants N`` seeds them
(the bucket's endpoint and keys from the standard AWS variables).
"""

from __future__ import annotations

import argparse
from typing import Any

import boto3
import botocore.exceptions
import redis

#: The registry's services that are not SQL databases, and what each is.
STORE_SERVICES = {"forecast_cache": "Redis", "reports": "S3"}
#: Forecasts cached per tenant, and reports exported per tenant.
FORECASTS, REPORTS = 24, 6


def fill_cache(url: str, tenants: int) -> int:
    """Each tenant's cached forecasts and profile; the keys written."""
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for tenant in range(1, tenants + 1):
        for day in range(FORECASTS):
            pipe.set(f"forecast:{tenant}:day{day}", f"{100 + day} loaves")
        pipe.set(f"tenant:{tenant}:profile", f"bakery {tenant}")
    pipe.execute()
    client.close()
    return tenants * (FORECASTS + 1)


def fill_reports(bucket: str, tenants: int) -> int:
    """Each tenant's exported reports (endpoint and keys from the AWS variables); the
    objects written."""
    client: Any = boto3.session.Session().client("s3")
    try:
        client.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:  # seeded before: the objects are rewritten
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    for tenant in range(1, tenants + 1):
        for month in range(1, REPORTS + 1):
            body = f"tenant {tenant}, month {month}: sales report\n".encode()
            client.put_object(
                Bucket=bucket, Key=f"tenants/{tenant}/2024-{month:02d}.csv", Body=body
            )
    client.close()
    return tenants * REPORTS


def main() -> None:
    parser = argparse.ArgumentParser(description="seed the bakery's cache and bucket")
    parser.add_argument("--cache-url", required=True, help="redis://host:port/db")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--tenants", type=int, default=5)
    args = parser.parse_args()
    keys = fill_cache(args.cache_url, args.tenants)
    objects = fill_reports(args.bucket, args.tenants)
    print(f"seeded {keys} cache keys and {objects} report objects")


if __name__ == "__main__":
    main()
