"""Tests of vsearch.delta: the delta log on its backends, without the app."""
