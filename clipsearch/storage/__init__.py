"""Storage: the SQLite database (source of truth) and the FAISS index (its cache)."""
