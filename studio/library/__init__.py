"""The prompt library: every prompt and image the studio made and imported collections, searched
by meaning (multilingual embeddings and a vector index), by image (hash, metadata, CLIP), and used
to improve ideas. The `Library` service, its item types, the CSV importer, the embedders, the index,
and two databases behind one `LibraryDB` contract (`backends/`: the catalog, PostgreSQL+pgvector;
`local_server` runs the latter on this machine).
Imports `studio.vision`, `studio.images`, `studio.writing` and below; reaches the studio above it
only through the `LibraryHost` protocol.
"""
