"""Tests of vsearch.search: shard fan-out and the in-memory delta index, without the app."""
