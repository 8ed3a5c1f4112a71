#!/usr/bin/env python3
"""boto3 as the independent S3 client of tests/s3/s3_storage_test.cc. Endpoint and credentials
come from the AWS_* environment variables, as for the code under test.

Usage:
  s3_tool.py put BUCKET KEY FILE            upload FILE
  s3_tool.py get BUCKET KEY FILE            download into FILE
  s3_tool.py put_many BUCKET PREFIX COUNT   COUNT small objects PREFIX00000.bin ...
  s3_tool.py list BUCKET PREFIX FILE        every key under PREFIX (paged), one a line
  s3_tool.py expect_denied BUCKET KEY       a GET with a wrong secret must fail with 403
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

try:
    import boto3
    import botocore
except ImportError as e:
    print(f"missing Python package (pip install -r requirements.txt): {e}")
    sys.exit(97)


def client(secret=None):
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name=os.environ.get("AWS_REGION", "us-east-1"),
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"])


cmd = sys.argv[1]
if cmd == "put":
    client().upload_file(sys.argv[4], sys.argv[2], sys.argv[3])
elif cmd == "get":
    client().download_file(sys.argv[2], sys.argv[3], sys.argv[4])
elif cmd == "put_many":
    bucket, prefix, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = client()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: c.put_object(Bucket=bucket, Key=f"{prefix}{i:05d}.bin",
                                             Body=i.to_bytes(4, "little")), range(count)))
elif cmd == "list":
    bucket, prefix, out = sys.argv[2], sys.argv[3], sys.argv[4]
    keys = []
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    open(out, "w").write("".join(k + "\n" for k in keys))
elif cmd == "expect_denied":
    try:
        client(secret="wrong-secret").get_object(Bucket=sys.argv[2], Key=sys.argv[3])
    except botocore.exceptions.ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        sys.exit(0 if status == 403 else 1)
    print("a GET signed with a wrong secret was accepted: authentication is off")
    sys.exit(1)
else:
    print(f"unknown command {cmd}")
    sys.exit(2)
