"""`python -m tests.support.fake_dataprep ARGS`: dataprep.py with the fake LLM, for subprocess
tests."""

import sys

from studio.cli import dataprep
from studio.llm import client as llm_client
from tests.support.fakes import FakeBackend

if __name__ == "__main__":
    llm_client.make_backend = lambda settings, *_: FakeBackend()
    sys.exit(dataprep.main(sys.argv[1:]))
