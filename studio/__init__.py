"""Series art studio: LLM-written image prompts for a TV series, rendered with Stable Diffusion."""

__version__ = "0.1.0"
