"""Tests of studio.writing."""
