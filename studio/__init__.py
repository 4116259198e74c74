"""Series art studio: LLM-written image prompts for a TV series, rendered with Stable Diffusion.

The public API is `open_studio` (see `studio.api`); it is imported on first use, so that
`import studio.params` and friends stay light.
"""

__version__ = "0.1.0"

__all__ = ["Studio", "open_studio"]


def __getattr__(name: str):
    if name in __all__:
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
