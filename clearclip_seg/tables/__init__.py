"""Result tables from run records: the paper-layout main table, per-class tables.

One job per module:

- ``records``: find, validate and parse run records (``load_records``).
- ``labels``: display names and benchmark column order.
- ``protocol``: protocol values, deviations from the published protocol,
  protocol cards.
- ``methods``: records of registered methods: their card, protocol (own or
  common), PAMR, row identity, expected setting and published number.
- ``build``: the main table and the per-class tables.
- ``row_cards``: the protocol card of every row (per benchmark).
- ``formats``: Markdown, CSV and LaTeX text.
- ``long``: the long format (one row per run x benchmark x class, settings as columns; CSV, JSONL).
- ``plot``: the PNG bar plot (matplotlib is imported only when plotting).
- ``outputs``: writing the requested formats into a directory.

``tools/collect_results.py`` is the command line over this package; the HTML report
(``clearclip_seg.report``, ``tools/report.py``) lays the same tables out as a page.
"""
from .build import (GROUP_BY, MainTable, PerClassTable, Row, build_main_table,  # noqa: F401
                    build_per_class_tables)
from .formats import card_markdown, tex_escape, to_csv, to_latex, to_markdown  # noqa: F401
from .long import LONG_COLUMNS, long_rows, to_long_csv, to_long_jsonl  # noqa: F401
from .outputs import FORMATS, write_outputs  # noqa: F401
from .plot import plot_main_table  # noqa: F401
from .protocol import ProtocolCard, build_protocol_card, protocol_deviations, record_protocol  # noqa: F401
from .records import Record, RecordError, load_records, parse_record  # noqa: F401
