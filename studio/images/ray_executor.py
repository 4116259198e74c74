"""The Ray executor: the batch job's renders on Ray workers, one image model loaded per worker.

Ray Data's batch-inference pattern (`map_batches` over a callable class with `concurrency`
workers and `num_gpus=1` each where the cluster has GPUs): each worker opens the image backend
once, from the same settings as the driver, and returns every image as PNG bytes (lossless, so
the pixels are the ones a local render gives). Only the driver, through the image service,
writes files and catalog rows. Ray restarts a worker that dies and runs its batch again, so a
killed worker loses nothing and adds nothing twice; a killed driver leaves only whole images,
and the next run renders what is missing.

Ray is optional: `pip install -r requirements-ray.txt`.
"""

from __future__ import annotations

import io
import logging
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from studio.core.config import Settings, setting
from studio.core.errors import RayUnavailableError, RenderError
from studio.core.params import RenderRequest
from studio.images.backends.base import ImageBackend, InputResolver, StepCallback
from studio.images.backends.registry import open_image_backend

if TYPE_CHECKING:
    from PIL import Image

STUDIO_PACKAGE = Path(__file__).resolve().parents[1]
CONNECT_TIMEOUT = 5.0  # seconds for a cluster's address to accept a connection
RAY_CLIENT_PORT = 10001
RAY_GCS_PORT = 6379

BackendFactory = Callable[[Settings], ImageBackend]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            f"{setting('executor')} is ray, but Ray is not installed: run `pip install -r "
            "requirements-ray.txt`, or use the local executor."
        ) from None
    return ray


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise RayUnavailableError unless something accepts connections at `address` (host:port
    or ray://host:port); "" (a new local cluster) and "auto" are left to Ray."""
    if address in ("", "auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    default = RAY_CLIENT_PORT if parts.scheme == "ray" else RAY_GCS_PORT
    try:
        host, port = parts.hostname, parts.port or default
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RayUnavailableError(
            f"{setting('ray_address')} is {address!r}, which is not host:port or ray://host:port."
        )
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise RayUnavailableError(
            f"No Ray cluster answered at {host}:{port} ({why}). Start one with `ray start "
            f"--head --port={port}` on that machine, or fix {setting('ray_address')}; leave it "
            "empty to start a cluster on this machine."
        ) from None


class RenderOnWorker:
    """Ray Data's callable class: one image backend per worker, loaded once."""

    def __init__(self, settings: Settings, factory: BackendFactory | None = None):
        self.backend = (factory or open_image_backend)(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"number": [], "position": [], "png": [], "error": []}
        for number, requests_blob, inputs_blob in zip(
            batch["number"], batch["requests"], batch["inputs"], strict=True
        ):
            requests: list[RenderRequest] = pickle.loads(requests_blob)
            stored: dict[str, bytes] = pickle.loads(inputs_blob)
            try:
                images = self.backend.render(requests, inputs=_resolver(stored))
            except RenderError as exc:
                out["number"].append(int(number))
                out["position"].append(-1)
                out["png"].append(b"")
                out["error"].append(str(exc))
                continue
            for position, image in enumerate(images):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG", compress_level=1)
                out["number"].append(int(number))
                out["position"].append(position)
                out["png"].append(buffer.getvalue())
                out["error"].append("")
        return out


def _resolver(stored: dict[str, bytes]) -> InputResolver:
    def inputs(sha: str) -> Image.Image:
        from PIL import Image

        with Image.open(io.BytesIO(stored[sha])) as image:
            image.load()
            return image.copy()

    return inputs


class RayExecutor:
    """Renders batches on a Ray cluster (see the module's docstring).

    `factory` opens the workers' backend (default: `open_image_backend(settings)`);
    `runtime_env` is added to the one that ships the studio package to the workers.
    """

    name = "ray"

    def __init__(
        self,
        settings: Settings,
        factory: BackendFactory | None = None,
        runtime_env: dict[str, Any] | None = None,
        num_cpus: int | None = None,
    ):
        ray = _import_ray()
        address = settings.ray_address.strip()
        check_address(address)
        self.settings = settings
        self.factory = factory
        self._ray = ray
        self._started = False
        env: dict[str, Any] = {"py_modules": [str(STUDIO_PACKAGE)], **(runtime_env or {})}
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "runtime_env": env,
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
            }
            if address and address != "local":
                options["address"] = address
            elif num_cpus is not None:
                options["num_cpus"] = num_cpus
            try:
                ray.init(**options)
            except ConnectionError as exc:
                raise RayUnavailableError(
                    f"No Ray cluster answered at {address or 'this machine'} ({exc}). Start one "
                    f"with `ray start --head`, or fix {setting('ray_address')}."
                ) from None
            self._started = True
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.cpus = int(resources.get("CPU", 1))
        wanted = settings.concurrency or max(1, self.gpus)
        self.concurrency = max(1, wanted)
        from ray.data import DataContext

        context = DataContext.get_current()
        context.enable_progress_bars = False
        context.execution_options.verbose_progress = False
        self.where = address or "a local Ray cluster"

    def describe(self) -> str:
        gpus = f", {self.gpus} GPUs" if self.gpus else ""
        return f"Ray ({self.where}: {self.cpus} CPUs{gpus}), {self.concurrency} render workers"

    def run(
        self,
        batches: Sequence[Sequence[RenderRequest]],
        inputs: InputResolver | None = None,
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[int, list[Image.Image] | RenderError]]:
        if not batches:
            return
        from PIL import Image

        items = [
            {
                "number": number,
                "requests": pickle.dumps(list(batch)),
                "inputs": pickle.dumps(_input_bytes(batch, inputs)),
            }
            for number, batch in enumerate(batches)
        ]
        ray = self._ray
        per_worker_cpus = 0 if self.gpus else max(1, self.cpus // self.concurrency)
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            RenderOnWorker,
            fn_constructor_kwargs={"settings": self.settings, "factory": self.factory},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(self.concurrency, len(items))),
            num_gpus=1 if self.gpus else 0,
            num_cpus=per_worker_cpus,
        )
        pending: dict[int, dict[int, Image.Image]] = {}
        for row in dataset.iter_rows():
            number = int(row["number"])
            if row["error"]:
                yield number, RenderError(str(row["error"]))
                continue
            with Image.open(io.BytesIO(row["png"])) as image:
                image.load()
                pending.setdefault(number, {})[int(row["position"])] = image.copy()
            if len(pending[number]) == len(batches[number]):
                got = pending.pop(number)
                yield number, [got[i] for i in range(len(got))]

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def _input_bytes(batch: Sequence[RenderRequest], inputs: InputResolver | None) -> dict[str, bytes]:
    """The input images a batch names (init images, masks, references), as PNG bytes."""
    shas = {
        sha
        for request in batch
        for sha in (request.init_image, request.mask_image, request.reference_image)
        if sha
    }
    if not shas:
        return {}
    if inputs is None:
        raise RenderError("The batch names input images but none were given to the executor.")
    found = {}
    for sha in sorted(shas):
        buffer = io.BytesIO()
        inputs(sha).save(buffer, format="PNG")
        found[sha] = buffer.getvalue()
    return found
