"""A real CLIP BPE tokenizer, offline: `vocab.json` + `merges.txt` built from the merges file in tests/data.

The layout is CLIP's own (and open_clip's `SimpleTokenizer`'s): the 256 byte symbols, the same with the
end-of-word marker `</w>`, one token per merge (the first 48,894 merges), then the two special tokens.
"""

import gzip
import json
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "clip_bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


@lru_cache
def write_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt into `folder`; return their paths."""
    merges = gzip.open(DATA).read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab, merges_file


def clip_tokenizer(folder: Path, max_length: int = 16):
    """transformers' CLIPTokenizer over CLIP's real 49,408-token vocabulary (padding with the end token,
    as Stable Diffusion's does)."""
    from transformers import CLIPTokenizer

    vocab, merges = write_clip_vocab(Path(folder))
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=max_length, pad_token="<|endoftext|>")
