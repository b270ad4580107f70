"""Query layer: turn a query vector into ranked hits."""
