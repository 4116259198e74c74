"""Tests of studio.library."""
