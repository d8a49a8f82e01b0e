"""Provenance of every number: record path, config hash, weights, precision, commit, machine."""
from ..tables.build import MainTable
from ..tables.formats import fmt
from ..tables.labels import bench_title
from ..tables.long import config_hash, record_path
from ..tables.protocol import protocol_deviations
from .html import table_html


def machine(rec) -> str:
    """Where the run ran, from the record: device, threads and world size, Python and torch versions."""
    t = rec.data.get('timing') or {}
    v = rec.data.get('versions') or {}
    parts = [str(t.get('device') or 'n/a')]
    if t.get('torch_threads'):
        parts.append(f"{t['torch_threads']} thread(s)")
    if t.get('world_size') and t['world_size'] != 1:
        parts.append(f"{t['world_size']} processes")
    parts += [f'{k} {v[k]}' for k in ('python', 'torch') if v.get(k)]
    return ', '.join(parts)


def weights(rec) -> str:
    """The CLIP weights: open_clip tag or file, 'random (none)' when the run had none."""
    p = (rec.data.get('model') or {}).get('pretrained')
    return 'random (none)' if p in (None, 'None', '') else str(p)


def is_random(rec) -> bool:
    """The run had no pretrained weights (a tiny test model or a random tower)."""
    return weights(rec).startswith('random')


def provenance_html(table: MainTable, base: str) -> str:
    """One line per number of the tables: run, benchmark, mIoU and where it comes from.

    Args:
        table: The main table.
        base: Record paths are shown relative to this folder.
    """
    header = ['Run', 'Benchmark', 'mIoU', 'Record', 'Config', 'Config hash', 'Weights', 'Precision', 'Commit',
              'Machine', 'Off protocol']
    body = []
    for r in table.rows:
        for b in table.benchmarks:
            rec = r.records.get(b)
            if rec is None:
                continue
            commit = rec.data.get('git_commit')
            body.append([r.label, bench_title(b), (fmt(rec.miou, table.decimals), rec.miou), record_path(rec, base),
                         (rec.data.get('config') or {}).get('path') or '', config_hash(rec), weights(rec),
                         (rec.data.get('model') or {}).get('precision') or '', (commit or 'n/a')[:12],
                         machine(rec), '; '.join(protocol_deviations(rec))])
    return '<div class="scroll">' + table_html(header, body, sortable=True, left=2, cls='prov',
                                               table_id='provenance') + '</div>' + (
        '<p class="note">Config hash: sha256 of the run identity stored in the record (model, data, '
        'evaluator, precision, file contents; first 12 hex digits): equal hashes ran the same settings.</p>')
