"""Where the library's items and vectors live: the catalog's own tables (`catalog`) or a shared
PostgreSQL server with pgvector (`postgres`), both meeting the `LibraryDB` contract (`base`).
"""
