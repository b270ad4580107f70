"""Looking after an index: verify it, repair it, back it up."""
