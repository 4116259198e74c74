"""Tests of studio.images."""
