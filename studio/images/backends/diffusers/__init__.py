"""The diffusers image backend: the `Renderer` (txt2img, img2img, inpaint on one loaded model) and
what it is built from: models and where their weights come from, samplers, adapters (ControlNet,
IP-Adapter), the demo model, compel prompt embeddings, the fast path and the step cache.

The only place in the package that imports torch, diffusers and transformers at module level;
it imports `studio.core` and the image contract (`studio.images.backends.base`), never the image
service above it. Loading it quiets the libraries' own logging and progress bars (the studio
draws its own progress).
"""

import transformers

transformers.logging.set_verbosity_error()  # quiet the optional-torchvision notices at import

from diffusers.utils import logging as diffusers_logging  # noqa: E402

diffusers_logging.set_verbosity_error()
diffusers_logging.disable_progress_bar()
transformers.logging.disable_progress_bar()
