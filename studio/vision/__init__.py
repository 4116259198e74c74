"""Looking at images with CLIP: the CLIP model (`clip`) and what the studio does with it
(`checks`: scores against the prompt, failure-mode flags, zero-shot labels, ranking candidates).
Imports `studio.images` (it scores what the image service stores), `studio.catalog` and
`studio.core`.
"""
