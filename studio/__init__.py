"""Series art studio: LLM-written image prompts for a TV series, rendered with Stable Diffusion.

The public API is `open_studio` (see `studio.api`); it is imported on first use, so that
`import studio.core.params` and friends stay light.
"""

from studio.core.version import __version__

__all__ = ["Studio", "__version__", "open_studio"]


def __getattr__(name: str):
    if name in ("Studio", "open_studio"):
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
