"""A server that refuses every request with 401 and quotes the key it got, as a careless server
might: for tests that an API key never reaches an error message."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class KeyQuotingServer:
    """On 127.0.0.1; `.url` ends in /v1. Use it as a context manager."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = self.headers.get("Authorization", "").removeprefix("Bearer ")
                error = {"message": f"Incorrect API key provided: {got}.", "code": "invalid_key"}
                body = json.dumps({"error": error}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> KeyQuotingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
