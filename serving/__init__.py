"""Serving the pushed model: a local server speaking TensorFlow Serving's REST API (with
version hot-swap, micro-batching, request logging and hybrid lookups), batch predictions into
a warehouse table, and serving-skew detection over the request logs."""
