"""S3 side of tests/e2e_s3.rs: creates a bucket and lists what is in it, with boto3 (an
S3 client independent of the object_store crate the binaries use).

usage: bucket.py ENDPOINT create BUCKET
       bucket.py ENDPOINT list BUCKET PREFIX
       bucket.py ENDPOINT put BUCKET KEY TEXT

`list` prints a JSON array of {"key", "size", "sha256"} for every object under PREFIX
(each object is downloaded and hashed; one deleted between the listing and its download is
left out, as it is gone). Credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY; requests are path-style, region us-east-1.
"""

import hashlib
import json
import sys

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def main() -> int:
    endpoint, command, bucket, *rest = sys.argv[1:]
    s3 = client(endpoint)
    if command == "create":
        s3.create_bucket(Bucket=bucket)
        return 0
    if command == "list":
        (prefix,) = rest
        objects = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                try:
                    body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                except s3.exceptions.NoSuchKey:
                    # Deleted between the listing and the read (the coordinator's artifact
                    # collector runs while the GC test polls): it is no longer in the bucket.
                    continue
                objects.append(
                    {"key": item["Key"], "size": item["Size"], "sha256": hashlib.sha256(body).hexdigest()}
                )
        json.dump(objects, sys.stdout)
        return 0
    if command == "put":
        key, text = rest
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
