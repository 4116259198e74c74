"""`python -m tests.fake_dataprep ARGS`: dataprep.py with the fake LLM, for subprocess tests."""

import sys

import dataprep
import studio.llm
from tests.fakes import FakeBackend

if __name__ == "__main__":
    studio.llm.make_backend = lambda settings, *_: FakeBackend()
    sys.exit(dataprep.main(sys.argv[1:]))
