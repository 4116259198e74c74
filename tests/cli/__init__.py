"""Tests of studio.cli."""
