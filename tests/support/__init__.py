"""Test helpers: fakes at the boundaries (LLM server, backends), sample catalogs, AppTest and
browser drivers, and the README's screenshot scripts."""
