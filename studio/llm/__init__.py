"""The text models, a module each: the contract (`base`: `ChatRequest` in, the text of one
answer out of a `ChatBackend`), any OpenAI-compatible server (`openai_compat`), the embedded
llama.cpp model (`embedded`), which of them the settings pick (`choice`), and `LLM` (`client`),
which asks for JSON that fits a schema, repairs invalid answers and caches them. Imports
`studio.core` only.
"""
