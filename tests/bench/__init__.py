"""Tests of the benchmarks' small runs."""
