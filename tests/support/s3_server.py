"""A real S3-compatible server on 127.0.0.1 for the storage tests: moto's server mode, in a thread of the test process.

The code under test reaches it as it would reach a real bucket: through pyarrow.fs and the standard AWS environment
variables (AWS_ENDPOINT_URL and fake credentials), set here for the duration and restored afterwards, so that
subprocesses and Ray workers started meanwhile inherit them. Every request the server answers is recorded
(`requests`), which is how the tests count downloads.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from operations.ports import free_port


@dataclass
class S3Server:
    endpoint: str
    env: dict[str, str]
    requests: list[str] = field(default_factory=list)
    """Request lines the server answered, e.g. 'GET /bucket/ckpt/model.safetensors HTTP/1.1'."""

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` through pyarrow (its `from_uri` reads AWS_ENDPOINT_URL; its S3FileSystem constructor
        does not); returns `s3://name`."""
        import pyarrow.fs

        fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{name}?allow_bucket_creation=true")
        fs.create_dir(name)
        return f"s3://{name}"

    def gets(self, path_suffix: str) -> int:
        """How many GET requests the server answered for object paths ending with `path_suffix`."""
        return sum(1 for line in self.requests if line.startswith("GET ") and line.split()[1].endswith(path_suffix))


class _RequestLog(logging.Handler):
    def __init__(self, server: S3Server):
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        line = re.sub(r"\x1b\[[\d;]*m", "", record.getMessage())  # werkzeug colours some status codes
        match = re.search(r'"([A-Z]+ \S+ HTTP/[\d.]+)"', line)
        if match:
            self.server.requests.append(match.group(1))


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start the server, point the AWS variables at it, and undo both afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        },
    )
    werkzeug = logging.getLogger("werkzeug")  # moto's server logs each request line here
    handler = _RequestLog(server)
    werkzeug.addHandler(handler)
    werkzeug.setLevel(logging.INFO)
    previous = {key: os.environ.get(key) for key in server.env}
    os.environ.update(server.env)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        yield server
    finally:
        moto.stop()
        werkzeug.removeHandler(handler)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
