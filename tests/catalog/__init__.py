"""Tests of studio.catalog."""
