"""The command line: `python dataprep.py` (the batch job, `--recover`, `--dry-run`) and
`python dataprep.py library ...` (`library`), and how errors name the flags (`flags`). The top of
the layers: it wires settings to `studio.api.Studio` and the workflows, and maps library errors to
one line and an exit code.
"""
