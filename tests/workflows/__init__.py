"""Tests of studio.workflows."""
