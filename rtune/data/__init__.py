"""Data: sources, formats, tokenization and packing (runs on the driver, or wherever data is prepared)."""
