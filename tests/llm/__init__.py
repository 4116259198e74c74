"""Tests of studio.llm."""
