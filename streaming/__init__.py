"""Streaming ingestion: a Beam job that turns a stream of events into complete spans
(`make stream`, `tfx-template stream`: streaming/job.py)."""
