#!/usr/bin/env python3
"""A local S3 server for tests/s3/s3_storage_test.cc: moto in server mode on 127.0.0.1 with
request signing enforced (moto's IAM authentication), stopped by SIGTERM or when its parent
(the test binary) goes away.

Usage: moto_server.py PORT READY_FILE BUCKET [BUCKET ...]

Starts moto on 127.0.0.1:PORT, creates an IAM user with an allow-all policy and an access key,
creates the buckets, then turns authentication on (every later request must be signed with that
key: a wrong secret gets SignatureDoesNotMatch / 403) and writes READY_FILE with two lines:
access key id, secret access key. Exit status 97 when moto / boto3 / flask are missing.
"""
import json
import os
import signal
import sys
import time
import urllib.request

try:
    import boto3
    from moto.server import ThreadedMotoServer
except ImportError as e:
    print(f"missing Python package for the S3 tests (pip install -r requirements.txt): {e}")
    sys.exit(97)

# Two moto 5.2 deviations from S3 that real clients trip over, fixed here (test fixture only):
#  1. SigV4 check: moto hands the raw request URL (query values such as prefix=a/ or
#     delimiter=/ unescaped, as clients send them) to botocore, whose canonical query string
#     expects them escaped -- so every signed ListObjectsV2 with a '/' fails with
#     SignatureDoesNotMatch (boto3's too). We escape the query as SigV4 says before checking.
#  2. CompleteMultipartUpload answers <CompleteMultipartUploadResponse>; S3 (and Arrow's check
#     for errors embedded in a 200 response) expect <CompleteMultipartUploadResult>.
from urllib.parse import quote, unquote

from moto.iam import access_control as _ac
from moto.s3 import responses as _s3r

_orig_create_aws_request = _ac.IAMRequestBase._create_aws_request


def _create_aws_request(self):
    path, sep, query = self._path.partition("?")
    if sep:
        pairs = []
        for pair in query.split("&"):
            k, eq, v = pair.partition("=")
            pairs.append(quote(unquote(k), safe="-_.~") + eq + quote(unquote(v), safe="-_.~"))
        self._path = path + "?" + "&".join(pairs)
    return _orig_create_aws_request(self)


_ac.IAMRequestBase._create_aws_request = _create_aws_request

_orig_key_response_post = _s3r.S3Response._key_response_post


def _key_response_post(self, *args, **kwargs):
    status, headers, body = _orig_key_response_post(self, *args, **kwargs)
    if isinstance(body, (bytes, str)):
        wrong, right = "CompleteMultipartUploadResponse", "CompleteMultipartUploadResult"
        if isinstance(body, bytes):
            wrong, right = wrong.encode(), right.encode()
        body = body.replace(wrong, right)
    return status, headers, body


_s3r.S3Response._key_response_post = _key_response_post

port = int(sys.argv[1])
ready = sys.argv[2]
buckets = sys.argv[3:]
parent = os.getppid()
deadline = time.time() + 600  # never outlive a test run

server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
endpoint = f"http://127.0.0.1:{port}"
boot = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **boot)
iam.create_user(UserName="megatax-test")
iam.put_user_policy(UserName="megatax-test", PolicyName="all",
                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                        {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="megatax-test")["AccessKey"]
s3 = boto3.client("s3", **{**boot, "aws_access_key_id": key["AccessKeyId"],
                           "aws_secret_access_key": key["SecretAccessKey"]})
for b in buckets:
    s3.create_bucket(Bucket=b)
# From now on every request is authenticated and authorised.
req = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                             headers={"Content-Type": "text/plain"})
urllib.request.urlopen(req).read()
tmp = ready + ".tmp"
with open(tmp, "w") as f:
    f.write(key["AccessKeyId"] + "\n" + key["SecretAccessKey"] + "\n")
os.rename(tmp, ready)

stop = False


def on_term(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
while not stop and os.getppid() == parent and time.time() < deadline:
    time.sleep(0.2)
server.stop()
