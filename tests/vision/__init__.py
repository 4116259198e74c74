"""Tests of studio.vision."""
