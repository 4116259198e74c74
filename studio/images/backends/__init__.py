"""Image backends: the contract every backend meets (`base`), the registry that opens the one
the settings name (`registry`), OpenAI Images (`openai_images`) and diffusers (`diffusers/`).
Backends import the contract; only the registry imports backends, on demand.
"""
