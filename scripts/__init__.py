"""Data helpers behind `tfx-template data`, `schema`, `replay` and `generate-data`."""
