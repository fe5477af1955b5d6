"""Tests of the shipped example (Chicago taxi tips): they assert values of that dataset
(its columns, vocabularies, schema, anomalies) and are skipped when `make new-dataset` has made
another dataset the active one. The machinery's own tests live one level up."""
