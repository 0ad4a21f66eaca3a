"""A small, deterministic synthetic corpus: learnable structure, a few hundred KB at most."""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the robot", "a small bird", "the teacher", "our neighbour"]
VERBS = ["sees", "likes", "finds", "carries", "paints", "follows", "remembers", "builds"]
OBJECTS = ["a red ball", "the green door", "an apple", "the blue car", "a wooden box", "the tall tree", "a paper boat", "the bright lamp"]
PLACES = ["in the garden", "near the river", "at the market", "on the hill", "under the bridge", "in the kitchen"]
TIMES = ["every morning", "at night", "on sunday", "after lunch", "in winter"]


def sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.6:
        s += f" {rng.choice(PLACES)}"
    if rng.random() < 0.4:
        s += f" {rng.choice(TIMES)}"
    return s[0].upper() + s[1:] + "."


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def write_jsonl(path: Path, n: int = 400, seed: int = 0, kind: str = "text") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = documents(n, seed)
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            if kind == "text" or i % 3 == 0:
                rec = {"id": f"d{i}", "text": d}
            elif i % 3 == 1:
                a, _, b = d.partition(". ")
                rec = {"id": f"d{i}", "prompt": a + ".", "response": b or a}
            else:
                rec = {"id": f"d{i}", "messages": [{"role": "user", "content": d[:30]}, {"role": "assistant", "content": d}]}
            f.write(json.dumps(rec) + "\n")
    return path


def write_text(path: Path, n: int = 400, seed: int = 0) -> Path:
    path = Path(path)
    path.write_text("\n\n".join(documents(n, seed)) + "\n", encoding="utf-8")
    return path
