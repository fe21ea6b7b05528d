#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Builds the fortune-category data set that examples/minilm/finetune.py trains on, in under a
second: each text is one fortune from Debian's `fortunes` package (its %-separated files under
/usr/share/games/fortunes/), and its label is the file it came from (the category).

    python3 build_dataset.py --out DIR [--train-per-class N] [--test-per-class N] [--seed S]

Writes DIR/train.jsonl and DIR/test.jsonl ({"text": ..., "label": i} per line, classes balanced)
and DIR/source.json (the Debian package and its version, the categories, the counts and what the
package's copyright file says). The texts stay on the machine that built them: the repository
keeps only this script (the output folder is ignored by git).
"""

import argparse
import json
import random
import subprocess
from pathlib import Path

# Six categories whose topics differ (so the labels are learnable from the text) and that each
# keep at least 128 fortunes of 40 to 600 characters in fortunes 1:1.99.1-7.3 (Debian 12).
CATEGORIES = ("computers", "education", "food", "law", "love", "sports")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
COPYRIGHT = Path("/usr/share/doc/fortunes/copyright")
# What /usr/share/doc/fortunes/copyright says, summarised (docs/minilm.md quotes it too).
LICENCE_SUMMARY = (
    "The package's copyright file says the program falls under the BSD copyright "
    "(Copyright (c) 1991 The Regents of the University of California; clauses 1, 2 and 4, "
    "clause 3 deleted) and names the cookie file's source; it gives no separate licence for "
    "the fortune texts.")
# Fortunes shorter than this are mostly one-liners with no topic words; longer ones would be cut
# at the model's 64 tokens anyway.
MIN_CHARS, MAX_CHARS = 40, 600


def package_version(name):
    """The installed Debian package's version, as dpkg records it."""
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], check=True,
                          capture_output=True, text=True).stdout


def read_fortunes(path):
    """The fortunes of one %-separated file, whitespace collapsed, in file order."""
    text = path.read_text(encoding="utf-8", errors="replace")
    items = []
    for chunk in text.split("\n%\n"):
        item = " ".join(chunk.replace("%", " ").split())
        if MIN_CHARS <= len(item) <= MAX_CHARS:
            items.append(item)
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--train-per-class", type=int, default=88)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    need = args.train_per_class + args.test_per_class
    seen = set()
    train, test, counts = [], [], {}
    for label, category in enumerate(CATEGORIES):
        # A fortune found in an earlier category (or twice in this one) is dropped: a text has
        # one label.
        items = []
        for item in read_fortunes(FORTUNES_DIR / category):
            if item not in seen:
                seen.add(item)
                items.append(item)
        counts[category] = len(items)
        if len(items) < need:
            raise SystemExit(f"build_dataset: {category} has {len(items)} usable fortunes, "
                             f"fewer than the {need} asked for")
        # One generator per category, so that a category's split does not depend on the others.
        random.Random(f"{args.seed}:{category}").shuffle(items)
        test += [{"text": t, "label": label} for t in items[:args.test_per_class]]
        train += [{"text": t, "label": label} for t in items[args.test_per_class:need]]
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed + 1).shuffle(test)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    source = {
        "debian_package": "fortunes",
        "version": package_version("fortunes"),
        "files": [str(FORTUNES_DIR / c) for c in CATEGORIES],
        "categories": list(CATEGORIES),
        "usable_fortunes": counts,
        "train": len(train), "test": len(test), "seed": args.seed,
        "licence": LICENCE_SUMMARY,
        "copyright_file": str(COPYRIGHT),
    }
    (args.out / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    print(f"build_dataset: {len(train)} training and {len(test)} held-out fortunes in "
          f"{len(CATEGORIES)} categories from fortunes {source['version']} -> {args.out}")


if __name__ == "__main__":
    main()
