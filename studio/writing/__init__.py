"""Text the LLM writes for the images: episode prompts by meta-prompting, season prompts by
self-ask in five styles, character looks, storyboard moments, change requests and alternate
realities, with the prompt templates from `prompts/`. A peer of `studio.images` (neither imports
the other); imports `studio.llm`, `studio.catalog` and `studio.core`.
"""
