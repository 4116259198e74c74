"""Turn a series' summaries into image prompts with an LLM and render them with Stable Diffusion.

Run: `python dataprep.py` (the bundled sample series, embedded LLM, image model `auto`), or e.g.
`python dataprep.py --data my_show/ --map summary=resumo --seasons 1 --images-per-episode 2`;
`python dataprep.py --help` lists every flag. The prompt library: `python dataprep.py library
import FILE.csv`, `... library search TEXT`, `... library index`, `... library status`.
The command line lives in `studio.cli`.
"""

import os
import sys

from studio.cli.dataprep import main

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
