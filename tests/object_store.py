"""An S3 API on loopback for tests: moto's server in a thread of the test process, on 127.0.0.1.

Clients find it through the standard AWS environment variables (``AWS_ENDPOINT_URL`` and test
credentials), which Dagster's run processes and conversion workers inherit, so the code under test
configures nothing of its own: as with a real S3-compatible store.
"""

import logging
import os
import uuid
from contextlib import contextmanager

BUCKET = "dozens-test"


@contextmanager
def loopback_s3(cache_folder):
    """Start the server, point the environment at it (and the local cache at ``cache_folder``), yield the
    endpoint URL; everything is put back afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing", "DOZENS_ARTIFACT_CACHE": str(cache_folder)}
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def fresh_prefix(label: str) -> str:
    """A URL under the test bucket that no other test uses."""
    return f"s3://{BUCKET}/{label}-{uuid.uuid4().hex[:8]}"
