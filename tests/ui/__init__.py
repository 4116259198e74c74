"""Tests of studio.ui."""
