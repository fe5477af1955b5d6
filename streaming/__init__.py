"""Streaming ingestion: a Beam job that turns a stream of events into complete spans
(`python -m streaming.job`, see streaming/job.py)."""
