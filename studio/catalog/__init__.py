"""The catalog: one SQLite file (plus PNGs beside it) that remembers every prompt, image,
character, strip and batch run. Owns the schema and its migrations, the row types, atomic file
writes, the `Store`, rebuilding the catalog from PNGs (`recovery`) and the batch runs' log
(`job_log`). Imports only `studio.core`.
"""
