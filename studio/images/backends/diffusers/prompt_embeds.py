"""Text embeddings for weighted and long prompts, by compel, for SD 1.x/2.x and SDXL pipelines.

    encoder = PromptEncoder(pipe, family="sd")
    arguments = encoder.arguments(["a (red:1.3) door"], ["blurry"], long=False)
    pipe(**arguments, ...)  # prompt_embeds, negative_prompt_embeds (and SDXL's pooled ones)

Prompts are parsed by `studio.core.prompt_syntax` (AUTOMATIC1111's syntax, strictly) into weighted
fragments, which compel's `EmbeddingsProvider` turns into embeddings: weights above 1 scale a
fragment's vectors, weights below 1 blend towards the prompt without it (compel's MASK mode). With
`long=True` a prompt past 75 tokens is encoded in 77-token chunks that are concatenated, as
AUTOMATIC1111 does, and each BREAK section starts a chunk of its own; otherwise a prompt is cut at
77 tokens, as plain encoding does. Prompts of one call are padded to the same number of chunks
with the empty prompt's embedding. `blend` moves each prompt's embeddings towards another
prompt's (prompt interpolation: text embeddings lerped, the same seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from compel import Compel, ReturnedEmbeddingsType

from studio.core.hub import SDXL
from studio.core.prompt_syntax import ParsedPrompt, parse_prompt


class PromptEncoder:
    """Embeddings for a pipeline's prompts; built once per pipeline (its text encoders), cheap."""

    def __init__(self, pipe: Any, family: str):
        self.family = family
        self.force_zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
        self._compels: dict[bool, list[Compel]] = {}
        self._pipe = pipe

    def _compel(self, long: bool) -> list[Compel]:
        """One compel per text encoder (SDXL has two; the second gives the pooled embedding)."""
        if long not in self._compels:
            pipe = self._pipe
            options = {"truncate_long_prompts": not long, "device": pipe.device}
            if self.family == SDXL:
                kind = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
                self._compels[long] = [
                    Compel(pipe.tokenizer, pipe.text_encoder, returned_embeddings_type=kind,
                           **options),
                    Compel(pipe.tokenizer_2, pipe.text_encoder_2, returned_embeddings_type=kind,
                           requires_pooled=True, **options),
                ]  # fmt: skip
            else:
                self._compels[long] = [Compel(pipe.tokenizer, pipe.text_encoder, **options)]
        return self._compels[long]

    def _embed(self, parsed: ParsedPrompt, long: bool) -> torch.Tensor:
        """[1, tokens, dim]: each BREAK section's chunks, in order (one section without `long`)."""
        sections = parsed.sections if long else parsed.sections[:1]
        per_encoder = []
        for compel in self._compel(long):
            provider = compel.conditioning_provider
            chunks = [
                provider.get_embeddings_for_weighted_prompt_fragments(
                    text_batch=[[f.text for f in section]],
                    fragment_weights_batch=[[f.weight for f in section]],
                    device=compel.device,
                )
                for section in sections
            ]
            per_encoder.append(torch.cat(chunks, dim=1))
        return torch.cat(per_encoder, dim=-1)

    def _pooled(self, parsed: ParsedPrompt) -> torch.Tensor:
        """SDXL's pooled embedding: of the first chunk's plain text, as AUTOMATIC1111 does."""
        compel = self._compel(False)[1]
        plain = "".join(f.text for f in parsed.sections[0]).strip()
        return compel.conditioning_provider.get_pooled_embeddings([plain], device=compel.device)

    def _empty(self, long: bool) -> torch.Tensor:
        return torch.cat([c.conditioning_provider.empty_z for c in self._compel(long)], dim=-1)

    @torch.no_grad()
    def arguments(
        self,
        prompts: Sequence[str],
        negatives: Sequence[str],
        long: bool = False,
        blend: Sequence[tuple[str, float] | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The pipeline's embedding arguments for `prompts` and `negatives` (one per prompt).
        `blend[i]` = (other prompt, t): prompt i's embeddings are (1 - t) * own + t * other's."""
        blend = blend or [None] * len(prompts)
        parsed = [parse_prompt(p) for p in prompts]
        positives = [self._embed(p, long) for p in parsed]
        others = [None if b is None else parse_prompt(b[0]) for b in blend]
        other_embeds = [None if o is None else self._embed(o, long) for o in others]
        negative_parsed = [parse_prompt(n) for n in negatives]
        negative = [self._embed(n, long) for n in negative_parsed]
        zero_negative = [self.force_zeros and not n.strip() for n in negatives]
        padded = self._pad(
            [*positives, *[o for o in other_embeds if o is not None], *negative], long
        )
        count = len(prompts)
        positives, rest = padded[:count], padded[count:]
        lerped = iter(rest[: sum(o is not None for o in other_embeds)])
        negative = rest[len(rest) - count :]
        mixed = []
        for own, other, pair in zip(positives, other_embeds, blend, strict=True):
            mixed.append(own if other is None else torch.lerp(own, next(lerped), pair[1]))
        negative = [torch.zeros_like(n) if z else n for n, z in zip(negative, zero_negative,
                                                                    strict=True)]  # fmt: skip
        out = {"prompt_embeds": torch.cat(mixed), "negative_prompt_embeds": torch.cat(negative)}
        if self.family == SDXL:
            pooled = []
            for own, other, pair in zip(parsed, others, blend, strict=True):
                vector = self._pooled(own)
                if other is not None:
                    vector = torch.lerp(vector, self._pooled(other), pair[1])
                pooled.append(vector)
            negative_pooled = [
                torch.zeros_like(pooled[0]) if z else self._pooled(n)
                for n, z in zip(negative_parsed, zero_negative, strict=True)
            ]
            out["pooled_prompt_embeds"] = torch.cat(pooled)
            out["negative_pooled_prompt_embeds"] = torch.cat(negative_pooled)
        return out

    def _pad(self, embeds: list[torch.Tensor], long: bool) -> list[torch.Tensor]:
        """Every tensor as long as the longest, by appending the empty prompt's chunk."""
        longest = max(e.shape[1] for e in embeds)
        empty = self._empty(long).to(embeds[0].dtype)
        out = []
        for e in embeds:
            while e.shape[1] < longest:
                e = torch.cat([e, empty], dim=1)
            out.append(e)
        return out
