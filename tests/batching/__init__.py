"""Tests of dynamic batching: the batch policy and gather/scatter, each on both implementations."""
