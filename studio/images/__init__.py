"""Every image the studio makes: the one image service (`service`: cache key, catalog look-up,
render, store), the render worker that batches requests across sessions (`worker`), executors
(local, Ray), the backends behind the `ImageBackend` contract (`backends/`: diffusers, OpenAI
Images), and what is built on them: denoising strips, interpolation, comparison grids, LoRA files,
control maps, the safety filter and the latent preview. Imports `studio.catalog` and
`studio.core`; torch only under `backends/diffusers/`.
"""
