"""The server in a thread of this process, on a free localhost port: for a notebook that wants
the studio's HTTP API beside its own code, the benchmark and the tests.

    with BackgroundServer(load_settings({"image_model": "demo"})) as server:
        requests.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "a lighthouse"})
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from studio.core.config import Settings
from studio.core.errors import StudioError
from studio.server.auth import MAX_BODY, Account
from studio.server.state import ServerState

START_SECONDS = 30


class BackgroundServer:
    """uvicorn serving `create_app` in a daemon thread; `url` once entered."""

    def __init__(
        self,
        settings: Settings,
        accounts: Sequence[Account] = (),
        max_body: int = MAX_BODY,
        host: str = "127.0.0.1",
        port: int = 0,  # 0: a free port
        chat_backend: Any = None,
    ) -> None:
        """`chat_backend`: an LLM backend instead of the one the settings name (tests' fake)."""
        self.chat_backend = chat_backend
        self.settings = settings
        self.accounts = tuple(accounts)
        self.max_body = max_body
        self.host, self.port = host, port
        self.state: ServerState | None = None
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> BackgroundServer:
        import uvicorn

        from studio.server.app import create_app

        self.state = ServerState(self.settings, chat_backend=self.chat_backend)
        app = create_app(self.state, self.accounts, self.max_body)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="studio-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.state.close()
                raise StudioError(f"The HTTP server did not start on {self.host}:{self.port}.")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.state is not None:
            self.state.close()
