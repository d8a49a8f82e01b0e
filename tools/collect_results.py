#!/usr/bin/env python
"""Build result tables from run records (the JSON files ``tools/test.py`` writes).

    python tools/collect_results.py RECORD_DIR_OR_FILES... [--out DIR]
        [--format md,csv,tex,png,long] [--per-class] [--group-by preset|backbone|arch|family]
        [--decimals 1|2]

A directory is searched for ``**/record.json`` and ``*.json``; files are read
as given. Partial records (``complete`` is not true) are skipped with a
warning naming the file; a malformed JSON file or a directory without records
is an error (one line, naming the file, exit status 2).

Tables follow the paper's layout: the eight benchmarks in ``PAPER_ORDER``
(those present in the records), then the average over the benchmarks present.
One row per model (arch + pretrained + last block + preset; for the other
methods: card + options + protocol, own or common, + PAMR). Each of our numbers
sits beside the published one, where one exists (ClearCLIP's paper; each
method's own source), with the difference. Rows of registered methods end with
the protocol card of every row (resize, windows, logit scale, prob_thd,
area_thd, PAMR, vocabulary per benchmark). ``--group-by family`` is the
backbone table: rows grouped by backbone family and size, with the image
tower's parameters and images/s (from the records' timing) beside mIoU.
Every table carries a protocol card built from the records' ``protocol``
fields (resize, crop/stride, prob_thd per benchmark, logit scale, templates,
vocabulary digest, precision), which says so when records disagree, and lists
where a run left the published protocol.

Without ``--out`` the Markdown is printed to stdout. With ``--out DIR`` the
requested formats are written there: ``results.md``, ``results.csv``,
``results.tex``, ``results.png``, ``results_long.csv`` and ``results_long.jsonl``
(``long``: one row per run x benchmark x class with the run's settings as
columns, for pandas) and, with ``--per-class``, ``per_class_<benchmark>.csv``
(the Markdown and LaTeX files then hold the per-class tables too).
``--html DIR`` also writes the static HTML report there (``tools/report.py``).

The table building lives in ``clearclip_seg.tables``; this file is the command line
over it.
"""
import argparse
import sys
from typing import List

from clearclip_seg.tables.build import GROUP_BY, build_main_table, build_per_class_tables
from clearclip_seg.tables.formats import to_csv, to_latex, to_markdown
from clearclip_seg.tables.outputs import FORMATS, write_outputs
from clearclip_seg.tables.records import RecordError, load_records


def _formats(s: str) -> List[str]:
    fs = [f.strip() for f in s.split(',') if f.strip()]
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise argparse.ArgumentTypeError(f"unknown format(s) {bad or [s]}: choose from {','.join(FORMATS)}")
    return fs


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description='Build result tables from ClearCLIP-Seg run records (JSON).')
    parser.add_argument('paths', nargs='+', metavar='RECORD_DIR_OR_FILES',
                        help='record files, or directories searched for **/record.json and *.json')
    parser.add_argument('--out', help='write the tables here (default: print Markdown to stdout)')
    parser.add_argument('--format', type=_formats, default=None,
                        help='comma list of md,csv,tex,png,long (default: all with --out, md without)')
    parser.add_argument('--html', metavar='DIR', help='also write the static HTML report into DIR (tools/report.py)')
    parser.add_argument('--per-class', action='store_true', help='add per-class IoU tables')
    parser.add_argument('--group-by', choices=GROUP_BY, help='group rows (and plot panels) by this key')
    parser.add_argument('--decimals', type=int, choices=(1, 2), default=2,
                        help='decimals for our numbers and differences (default 2)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the tool.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 on success, 2 on bad input (one-line error on stderr).
    """
    args = parse_args(argv)
    formats = args.format or (list(FORMATS) if args.out else ['md'])
    if not args.out and ('png' in formats or 'long' in formats):
        print(f"error: --format {'png' if 'png' in formats else 'long'} needs --out DIR", file=sys.stderr)
        return 2
    try:
        records = load_records(args.paths)
    except RecordError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    table = build_main_table(records, group_by=args.group_by, decimals=args.decimals)
    per_class = build_per_class_tables(table) if args.per_class else []
    if args.html:
        from clearclip_seg.report import write_report   # lazy: the report's imports only when asked for
        try:
            print(write_report(records, args.html, decimals=args.decimals))
        except RecordError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        if not args.out and args.format is None:
            return 0
    if args.out:
        for p in write_outputs(table, args.out, formats, per_class):
            print(p)
        return 0
    texts = {'md': lambda: to_markdown(table, per_class), 'csv': lambda: to_csv(table),
             'tex': lambda: to_latex(table, per_class)}
    sys.stdout.write('\n'.join(texts[f]() for f in formats))
    return 0


if __name__ == '__main__':
    sys.exit(main())
