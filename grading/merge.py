"""Build one summary from the reports of a sharded grading run.

    python -m grading.grade merge OUT [SHARD_OUT ...]     (or: python -m grading.merge ...)

Each shard (``grade COHORT --shard I/N --out SHARD_OUT``) writes its submissions' report
folders and ``shard-I-of-N.json``. ``merge`` checks that all N shards are there, each once, and
that together they graded every submission exactly once, copies the report folders of shards
that wrote elsewhere into OUT, and writes ``OUT/summary.{csv,md}``: the same files a single
run over the whole folder writes. With no SHARD_OUT, the shards wrote into OUT itself (a
shared file system: a Slurm array).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from grading import report  # standard library only: merge runs where pytest is not installed
from grading.report import slug


class MergeError(Exception):
    """Shards that do not add up to one run, in one line."""


def read_manifests(folders: list[Path]) -> dict[int, tuple[Path, dict]]:
    """Shard index -> (folder, manifest), checked for one shard count and no repeats."""
    found: dict[int, tuple[Path, dict]] = {}
    for folder in folders:
        for path in sorted(folder.glob("shard-*-of-*.json")):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            index = manifest["shard"]
            if index in found and found[index][0] != folder:
                raise MergeError(f"shard {index} appears twice: {found[index][0]} and {folder}")
            found[index] = (folder, manifest)
    if not found:
        raise MergeError(f"no shard-I-of-N.json in {', '.join(map(str, folders))}")
    counts = {m["shards"] for _, m in found.values()}
    if len(counts) != 1:
        raise MergeError(f"shards of different runs: shard counts {sorted(counts)}")
    (count,) = counts
    missing = sorted(set(range(count)) - set(found))
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(map(str, missing))} of {count}")
    return found


def merge(out: Path, folders: list[Path]) -> list[dict]:
    """The grades of every submission, in the order a single run lists them."""
    manifests = read_manifests(folders)
    everyone = {tuple(m["all"]) for _, m in manifests.values()}
    if len(everyone) != 1:
        raise MergeError("shards of different runs: they list different submissions")
    (names,) = everyone
    graded = [n for _, m in manifests.values() for n in m["submissions"]]
    if sorted(graded) != sorted(names):
        extra = sorted(set(graded) - set(names)) or sorted({n for n in graded
                                                            if graded.count(n) > 1})
        raise MergeError(f"the shards do not grade each submission once: missing "
                         f"{sorted(set(names) - set(graded))}, extra or repeated {extra}")
    where = {n: folder for folder, m in manifests.values() for n in m["submissions"]}
    grades = []
    for name in names:
        source = where[name] / slug(name)
        if where[name].resolve() != out.resolve():
            shutil.copytree(source, out / slug(name), dirs_exist_ok=True, symlinks=True)
        grades.append(json.loads((source / "report.json").read_text(encoding="utf-8")))
    return grades


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading.grade merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where the summary (and the reports) go")
    parser.add_argument("shards", type=Path, nargs="*",
                        help="the shards' --out folders (default: OUT itself)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        grades = merge(args.out, args.shards or [args.out])
    except (MergeError, OSError, KeyError, ValueError) as err:
        parser.error(str(err))
    report.write_summary(grades, args.out)
    print(f"merged {len(grades)} submissions: {args.out / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
