"""The pipeline's custom components, one per file; `pipeline/pipeline.py` wires them."""
