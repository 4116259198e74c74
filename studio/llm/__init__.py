"""The text models: a `ChatBackend` contract, the OpenAI-compatible client and the embedded
llama.cpp model, the choice between them, and `LLM`, which caches answers and asks for JSON that
fits a schema. Imports `studio.core` only.
"""
