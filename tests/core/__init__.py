"""Tests of studio.core."""
