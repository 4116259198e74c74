"""Serve the studio over HTTP: AUTOMATIC1111's `/sdapi/v1`, OpenAI's Images API under `/v1`, and
the series' own endpoints under `/studio/v1` (docs at /docs).

Run: `python serve.py` (http://127.0.0.1:7860, this machine only), or
`python serve.py --host 0.0.0.0 --api-auth alice:s3cret`; `python serve.py --help` lists every
flag. The command line lives in `studio.cli.serve`.
"""

import os
import sys

from studio.cli.serve import main

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
