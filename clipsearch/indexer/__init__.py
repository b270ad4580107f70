"""Indexing: scan folders, plan the changes, decode and embed, write per batch."""
