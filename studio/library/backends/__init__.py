"""Where the library's texts, items, vectors and image hashes live, behind one contract
(`base.LibraryDB`, with the filters every database reads the same way): the catalog's own tables
with usearch index files beside them (`catalog.CatalogLibrary`), or a PostgreSQL server with
pgvector shared by a team (`postgres.ServerLibrary`; `python -m studio.library.local_server
FOLDER` runs one on this machine).
"""
