"""`minialbert import-authors-checkpoint SRC DST` (the converter, `minialbert.convert`, is
imported only to run)."""

from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("src", help="checkpoint dir in the authors' layout, or a hub name (e.g. nlpie/miniALBERT-128)")
    parser.add_argument("dst", help="output model dir (written atomically)")


def run(args) -> int:
    from minialbert.convert import import_authors_checkpoint

    print(f"wrote {import_authors_checkpoint(args.src, args.dst)}")
    return 0
