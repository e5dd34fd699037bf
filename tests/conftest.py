"""Shared fixtures: one local Ray and one moto S3 server per test session, tiny cohorts.

Fake AWS credentials are set before anything starts, so Ray workers inherit them and nothing
can reach a real account.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "AKIAFAKEBRATSTESTKEY",
        "AWS_SECRET_ACCESS_KEY": "fake/brats+test+secret+do+not+log",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RAY_DEDUP_LOGS": "0",
    }
)
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "RAY_ADDRESS"):
    os.environ.pop(var, None)

FAKE_SECRETS = (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once for the whole session."""
    import ray
    from ray.data import DataContext

    ray.init(
        num_cpus=2,
        object_store_memory=768 << 20,
        include_dashboard=True,  # Ray Train's cleaner polls the state API it serves
        logging_level=logging.WARNING,
    )
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto's server on 127.0.0.1, as s3fs tests itself."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket per test; yields ``s3://<bucket>``."""
    import s3fs

    name = f"brats-test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    fs.mkdir(name)
    yield f"s3://{name}"


def s3fs_client(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True, use_listings_cache=False
    )


class FlakyS3Proxy:
    """A real HTTP proxy in front of the moto server that answers some requests with S3's
    ``503 SlowDown``: the first ``failures`` requests whose number is a multiple of
    ``every`` are refused, every other request is forwarded unchanged."""

    def __init__(self, upstream: str, *, every: int = 3, failures: int = 30) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep the test log quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests += 1
                    refuse = proxy.requests % every == 0 and proxy.refused < failures
                    if refuse:
                        proxy.refused += 1
                if refuse:
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                # A HEAD answer has no body but tells the object's length: pass that on.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_s3(s3_endpoint):
    """An S3 endpoint that answers 503 SlowDown to every third request, 30 times."""
    proxy = FlakyS3Proxy(s3_endpoint)
    yield proxy
    proxy.close()
