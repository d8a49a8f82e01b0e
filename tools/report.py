#!/usr/bin/env python
"""Write a static HTML report of a sweep (one folder, opens offline in any browser).

    python tools/report.py RESULTS... --out report/ [--compare RUN_A RUN_B]
        [--show-dir RUN=DIR ...] [--decimals 1|2] [--title TEXT]

RESULTS are record files or folders (searched as ``tools/collect_results.py``
does). The report holds the main, methods, backbone and ablation tables,
per-class IoU, the classes that differ most between two runs (``--compare``:
``'row label | benchmark'`` or a unique part of it, e.g. ``'SCLIP | voc21'``),
plots, the qualitative panels that runs saved with ``--show-dir`` (found under
each record's folder, or named here as ``RUN=DIR``) and the provenance of
every number. Bad input is a one-line error (exit status 2).

The building lives in ``clearclip_seg.report``; this file is the command line.
"""
import argparse
import sys

from clearclip_seg.report import write_report
from clearclip_seg.tables.records import RecordError, load_records


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    p = argparse.ArgumentParser(description='Static HTML report of ClearCLIP-Seg run records.')
    p.add_argument('paths', nargs='+', metavar='RESULTS', help='record files or folders of records')
    p.add_argument('--out', required=True, help='report folder (index.html, images/)')
    p.add_argument('--compare', nargs=2, metavar=('RUN_A', 'RUN_B'),
                   help="two runs preset in the comparison ('row label | benchmark' or a unique part)")
    p.add_argument('--show-dir', action='append', default=[], metavar='RUN=DIR',
                   help="a run's --show-dir folder, when it is not under the record's folder (repeatable)")
    p.add_argument('--decimals', type=int, choices=(1, 2), default=2, help='decimals of our numbers')
    p.add_argument('--title', default='ClearCLIP-Seg results', help="the page's title")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the tool; 0 on success, 2 on bad input (one line on stderr)."""
    args = parse_args(argv)
    try:
        records = load_records(args.paths)
        print(write_report(records, args.out, compare=args.compare, show_dirs=args.show_dir,
                           decimals=args.decimals, title=args.title))
    except (RecordError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
