"""How many calls an LLM server takes at once, found rather than assumed.

A local server (llama.cpp's, llama-cpp-python's, Ollama on a laptop) answers as many calls at once
as it has slots and queues the rest; a queued call's timeout runs out while it waits, and a job
that counts those timeouts as failures stops with most of its answers never asked. So:

- where the server says how many slots it has (llama.cpp's `GET /props`: `total_slots`), that is
  the limit;
- otherwise the limit starts at `START` and grows by one while the calls' latency holds (the
  mean of the last `limit` answers within `LATENCY_GROWTH` of the best seen): a server that only
  queues shows it in its latency and is not pushed further;
- a timeout while other calls are in flight is the client's doing, not the server's failure: the
  limit drops to the calls that were still answered, and the call waits for a slot again without
  its try being counted (`OpenAIBackend._request`);
- a limit set by hand (`llm_concurrency`) is kept as it is.

Each call's timeout starts when it gets its slot, never while it waits for one here.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from urllib.parse import urlsplit, urlunsplit

START = 2  # calls at once before the server has shown what it takes
LATENCY_GROWTH = 1.5  # latency may grow this much over the best before the limit stops rising
PROPS_TIMEOUT = 2.0  # seconds for llama.cpp's /props: a server without it answers 404 at once


class Capacity:
    """A semaphore whose size follows what the server sustains."""

    def __init__(self, limit: int = START, ceiling: int = 8, fixed: bool = False) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = max(1, min(limit, self.ceiling))
        self.fixed = fixed
        self.in_flight = 0
        self._free = threading.Condition()
        self._latencies: deque[float] = deque(maxlen=16)
        self._best: float | None = None
        self._busy_until = 0.0  # the server may still be working on calls given up on until then
        self.changes: list[tuple[int, str]] = []  # (new limit, why): for the run's report

    def acquire(self) -> None:
        with self._free:
            while self.in_flight >= self.limit:
                self._free.wait()
            self.in_flight += 1

    def release(self) -> None:
        with self._free:
            self.in_flight -= 1
            self._free.notify_all()

    def succeeded(self, seconds: float) -> None:
        """An answer came back after `seconds` (from getting its slot)."""
        with self._free:
            self._best = seconds if self._best is None else min(self._best, seconds)
            self._latencies.append(seconds)
            if self.fixed or self.limit >= self.ceiling or len(self._latencies) < self.limit:
                return
            recent = list(self._latencies)[-self.limit :]
            if sum(recent) / len(recent) <= LATENCY_GROWTH * self._best:
                self._set(self.limit + 1, "latency held")

    def timed_out(self, started: float) -> bool:
        """A call whose try started at `started` (time.monotonic) timed out; True when the
        server was crowded: other calls were in flight, or it was still busy with calls given up
        on before (a server goes on with a request its client abandoned). Then the limit drops
        below the one that crowded it and stays there, and the timeout is not the server's
        failure. False when the call had the server to itself."""
        now = time.monotonic()
        with self._free:
            others = self.in_flight - 1
            if others <= 0 and started >= self._busy_until:
                return False
            self._busy_until = max(self._busy_until, now + (now - started))
            if not self.fixed:
                lower = max(1, min(self.limit - 1, others) if others > 0 else self.limit - 1)
                self.ceiling = min(self.ceiling, max(1, lower))
                self._set(lower, "a call timed out behind others")
            return True

    def advertised(self, slots: int) -> None:
        """The server says it has `slots`: that is the limit from now on."""
        with self._free:
            self.fixed = True
            self.ceiling = max(1, slots)
            self._set(self.ceiling, "the server's slots")

    def _set(self, limit: int, why: str) -> None:
        if limit != self.limit:
            self.limit = limit
            self._latencies.clear()
            self.changes.append((limit, why))
            self._free.notify_all()


def advertised_slots(base_url: str, api_key: str = "") -> int | None:
    """The slots a llama.cpp server says it has (`/props` beside its `/v1`, asked with the API
    key as every call is), else None. OpenAI's own API is not asked."""
    parts = urlsplit(base_url)
    if (parts.hostname or "").endswith("openai.com"):
        return None
    path = parts.path.rstrip("/")
    path = path[: -len("/v1")] if path.endswith("/v1") else path
    url = urlunsplit((parts.scheme, parts.netloc, f"{path}/props", "", ""))
    if parts.scheme not in ("http", "https"):
        return None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=PROPS_TIMEOUT) as response:  # noqa: S310
            props = json.loads(response.read(65536))
    except (OSError, ValueError):
        return None
    slots = props.get("total_slots") if isinstance(props, dict) else None
    return slots if isinstance(slots, int) and slots > 0 else None


def server_capacity(base_url: str, concurrency: int, fixed: bool, api_key: str = "") -> Capacity:
    """The capacity for a server: `concurrency` when set by hand (`fixed`), else START growing
    up to `concurrency`, until the server says how many slots it has (asked in the background,
    so that a server that does not answer costs no call any time)."""
    if fixed:
        return Capacity(concurrency, concurrency, fixed=True)
    capacity = Capacity(START, concurrency)

    def ask() -> None:
        slots = advertised_slots(base_url, api_key)
        if slots is not None:
            capacity.advertised(slots)

    threading.Thread(target=ask, name="llm-slots", daemon=True).start()
    return capacity


def elapsed(started: float) -> float:
    return time.monotonic() - started
