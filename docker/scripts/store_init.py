"""Create the bucket that ``VSEARCH_STORE`` names, if it is missing (the store-init service).

Uses the same settings and S3 client as the pipeline and the service (``VSEARCH_STORE``,
``VSEARCH_S3_ENDPOINT_URL``, ``VSEARCH_S3_REGION``; credentials from boto3's chain), so a
stack that starts has a store every component can reach. Idempotent; exits non-zero when the
bucket cannot be created or reached, so the services that depend on it do not start.
"""

from __future__ import annotations

import logging
import sys
import time

from botocore.exceptions import BotoCoreError, ClientError

from vsearch.config import Settings
from vsearch.storage import open_store
from vsearch.storage.s3 import S3Store

log = logging.getLogger("store_init")


def ensure_bucket(store: S3Store, region: str = "") -> bool:
    """Create ``store.bucket`` unless it exists; True when it was created now."""
    try:
        store.client.head_bucket(Bucket=store.bucket)
        return False
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 404:
            raise
    kwargs: dict[str, object] = {"Bucket": store.bucket}
    if region and region != "us-east-1":  # S3 refuses a LocationConstraint of us-east-1
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        store.client.create_bucket(**kwargs)  # type: ignore[arg-type]
    except ClientError as e:
        # Another init got there first: fine.
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
            raise
        return False
    store.client.head_bucket(Bucket=store.bucket)
    return True


def main(attempts: int = 10, delay_s: float = 3.0) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.load()
    store = open_store(settings=settings)
    if not isinstance(store, S3Store):
        log.info("store %s is not S3: nothing to create", settings.store)
        return 0
    for attempt in range(1, attempts + 1):
        try:
            created = ensure_bucket(store, settings.s3_region)
        except (BotoCoreError, ClientError) as e:
            log.warning("attempt %d/%d: %s", attempt, attempts, e)
            if attempt == attempts:
                return 1
            time.sleep(delay_s)
            continue
        log.info("bucket %s %s", store.bucket, "created" if created else "already there")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
