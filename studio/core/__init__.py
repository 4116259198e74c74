"""The studio's foundations, imported by every other layer and importing none of them: the
error hierarchy, settings (one lookup: flag, environment, `studio.toml`, default), render
parameters and their limits, targets and prompt specs, the strict AUTOMATIC1111 prompt parser, PNG
metadata, input images, remote-URL helpers, the model hub helpers and the series data. Torch-free;
imports nothing from `studio` outside `core`.
"""
