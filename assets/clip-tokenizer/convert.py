"""Convert OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` to a HF tokenizer folder.

The output (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
``special_tokens_map.json``) loads offline with
``transformers.CLIPTokenizer.from_pretrained(folder)`` and reproduces the
tokenizer of openai/clip-vit-large-patch14 / Stable Diffusion 1.5
(49408 tokens, 77-token window, padded with ``<|endoftext|>``).

How to regenerate (no dependencies besides the standard library; the wheel
is only downloaded and unzipped, never installed)::

    pip download --no-deps -d /tmp/clipdl open_clip_torch==3.3.0
    unzip -q -o -d /tmp/clipdl/oc /tmp/clipdl/open_clip_torch-3.3.0-py3-none-any.whl
    python assets/clip-tokenizer/convert.py \
        /tmp/clipdl/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

By default the files are written next to this script; pass ``--out DIR``
to write them elsewhere.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
# Same slice as OpenAI's SimpleTokenizer and HF's CLIPTokenizer: skip the
# header line, keep 49152 - 256 - 2 merges (48894), giving 49408 tokens.
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408


def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (as in GPT-2 / CLIP)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def load_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """Read the merges exactly as CLIP's SimpleTokenizer does."""
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    lines = lines[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_path}: unexpected merges format")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Build the token -> id mapping in CLIP's order."""
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(merge) for merge in merges)
    vocab.extend([BOS, EOS])
    encoder = {token: i for i, token in enumerate(vocab)}
    if len(encoder) != VOCAB_SIZE:
        raise ValueError(f"expected {VOCAB_SIZE} unique tokens, got {len(encoder)}")
    return encoder


def write_folder(bpe_path: Path, out: Path) -> None:
    """Write the four Hugging Face tokenizer files into ``out``."""
    merges = load_merges(bpe_path)
    vocab = build_vocab(merges)
    out.mkdir(parents=True, exist_ok=True)

    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, separators=(",", ":"))
    with open(out / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)

    special = {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    for name, data in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
    ):
        with open(out / name, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: this script's folder)",
    )
    args = parser.parse_args()
    write_folder(args.bpe, args.out)
    print(f"wrote {VOCAB_SIZE}-token CLIP tokenizer to {args.out}")


if __name__ == "__main__":
    main()
