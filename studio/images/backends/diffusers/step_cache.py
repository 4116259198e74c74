"""Step caching in the style of DeepCache (Ma et al., 2023): the UNet's deep blocks change little
from one denoising step to the next, so they run on every `interval`-th step only and their
outputs are reused in between; the shallow blocks (the input convolution, the first down block
and the last up block) run on every step with fresh inputs.

    state = apply_step_cache(pipe.unet, interval=3)   # once, on the loaded unet
    state.start()                                     # before each pipeline call

Off by default (`step_cache` = 0). It costs quality: the reused features are a step or more old,
so fine detail drifts from the uncached image (DeepCache reports about 2x at interval 3 on SD 1.5
for a small drop in quality); the interval is part of every cache key and of the provenance, so
cached and uncached images never mix. Built on diffusers' public hooks (`diffusers.hooks`), which
replace a block's forward without copying the model; not combined with torch.compile.
"""

from __future__ import annotations

from typing import Any

from diffusers.hooks import HookRegistry, ModelHook

HOOK = "studio_step_cache"


class StepCacheState:
    """Counts the UNet's calls in one pipeline call; says whether this one reuses deep features."""

    def __init__(self, interval: int):
        self.interval = interval
        self.calls = 0
        self.reused = 0  # calls that reused the deep blocks, since `start`
        self.reuse = False  # whether the current call reuses them
        self.hooks: list[_ReuseOutput] = []

    def start(self) -> None:
        """A new pipeline call: its first step runs every block, and nothing of the last call's
        (another prompt, another seed) is kept."""
        self.calls = self.reused = 0
        for hook in self.hooks:
            hook.output = None

    def next_call(self) -> bool:
        reuse = self.calls % self.interval != 0
        self.calls += 1
        self.reused += reuse
        return reuse


class _CountSteps(ModelHook):
    """On the UNet: decide, per call, whether the deep blocks are reused."""

    def __init__(self, state: StepCacheState):
        super().__init__()
        self.state = state

    def pre_forward(self, module: Any, *args: Any, **kwargs: Any) -> tuple:
        self.state.reuse = self.state.next_call()
        return args, kwargs


class _ReuseOutput(ModelHook):
    """On a deep block: its output of the last full step, on the steps in between."""

    _is_stateful = True

    def __init__(self, state: StepCacheState):
        super().__init__()
        self.state = state
        self.output: Any = None

    def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
        if self.state.reuse and self.output is not None:
            return self.output
        self.output = self.fn_ref.original_forward(*args, **kwargs)
        return self.output

    def reset_state(self, module: Any) -> Any:
        self.output = None
        return module


def apply_step_cache(unet: Any, interval: int) -> StepCacheState:
    """Hook `unet` so that its deep blocks (every down block but the first, the mid block and
    every up block but the last) run on every `interval`-th call only."""
    state = StepCacheState(interval)
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(_CountSteps(state), HOOK)
    for block in [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]:
        hook = _ReuseOutput(state)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, HOOK)
        state.hooks.append(hook)
    return state
