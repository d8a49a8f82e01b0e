"""HTML building blocks of the report: escaping, tables, the page with its inline CSS and JS.

Everything is inline (no CDN, no web font): the folder opens offline in any
browser. The script sorts tables by a clicked header (or by the link's
``#sort=<table id>:<column>[:asc|desc]``) and fills the "classes that differ
most" table from the JSON embedded in the page.
"""
import html
import json
from typing import Iterable, Optional, Sequence

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.2em 3em;color:#1d1d1f;font-size:14px}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin:1.2em 0 .4em}
nav a{margin-right:1em}
.banner{background:#fff3cd;border:1px solid #e0b84c;padding:.6em 1em;margin:1em 0;font-weight:600}
table{border-collapse:collapse;margin:.4em 0 1em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d5d5;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
th.sortable{cursor:pointer}th.sortable:after{content:' \\2195';color:#999}
.pub{color:#555;font-size:.85em}.up{color:#137333}.down{color:#b3261e}.off{color:#b3261e}
tr.details td{background:#fafafa;text-align:left}
.grid td{min-width:4.5em}.best{font-weight:700;background:#e8f3ea}
.note{color:#555;font-size:.9em;margin:.2em 0}
.panel{display:flex;gap:6px;flex-wrap:wrap;align-items:flex-start;margin-bottom:1em}
.panel figure{margin:0}.panel figcaption{font-size:.85em;text-align:center}
.panel img{image-rendering:pixelated;border:1px solid #ccc;max-width:320px}
.legend span{display:inline-block;margin:0 .8em .2em 0}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border:1px solid #999}
.plot svg{max-width:100%;height:auto}
code{font-size:.9em}
.scroll{overflow-x:auto}table.prov td{text-align:left;font-size:.85em}
"""

JS = r"""
(function(){
  function cellValue(td){
    var v = td.getAttribute('data-v');
    if (v === null) v = td.textContent.trim();
    var n = parseFloat(v);
    return (v !== '' && !isNaN(n) && isFinite(v)) ? n : v.toLowerCase();
  }
  function sortTable(th){
    var table = th.closest('table'), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute('data-dir') !== 'asc';
    th.setAttribute('data-dir', asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = cellValue(a.cells[idx]), y = cellValue(b.cells[idx]);
      var xe = (x === '' || x === '-'), ye = (y === '' || y === '-');
      if (xe !== ye) return xe ? 1 : -1;      /* undefined values last either way */
      if (x < y) return asc ? -1 : 1;
      if (x > y) return asc ? 1 : -1;
      return 0;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  document.querySelectorAll('th.sortable').forEach(function(th){
    th.addEventListener('click', function(){ sortTable(th); });
  });
  /* a link can carry a sort: index.html#sort=<table id>:<column>[:asc|desc] */
  var m = /^#sort=([\w-]+):(\d+)(?::(asc|desc))?$/.exec(window.location.hash);
  var target = m && document.getElementById(m[1]);
  if (target) {
    var heads = target.tHead.rows[target.tHead.rows.length - 1].cells;
    var th = heads[parseInt(m[2], 10)];
    if (th) { if (m[3] === 'desc') th.setAttribute('data-dir', 'asc'); sortTable(th); }
  }
  /* for the headless-browser test: how many pictures decoded, and that the script ran to its end */
  window.addEventListener('load', function(){
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function(i){ return i.complete && i.naturalWidth > 0; }).length;
    document.body.setAttribute('data-images', ok + '/' + imgs.length);
  });
  var dataEl = document.getElementById('class-data');
  if (!dataEl) { document.body.setAttribute('data-ready', '1'); return; }
  var data = JSON.parse(dataEl.textContent);
  var selA = document.getElementById('cmp-a'), selB = document.getElementById('cmp-b');
  var out = document.getElementById('cmp-out');
  function fmt(v){ return v === null ? '-' : v.toFixed(data.decimals); }
  function update(){
    var a = data.runs[selA.value], b = data.runs[selB.value];
    var body = out.tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    if (!a || !b) return;
    if (a.benchmark !== b.benchmark) {
      var tr0 = body.insertRow(); var td0 = tr0.insertCell();
      td0.colSpan = 4; td0.className = 'l';
      td0.textContent = 'The two runs are on different benchmarks (' + a.benchmark + ', ' + b.benchmark + ').';
      return;
    }
    var rows = [];
    a.classes.forEach(function(c, i){
      var x = a.iou[i], y = b.iou[b.classes.indexOf(c)];
      if (x === null || y === null || y === undefined) return;
      rows.push([c, x, y, y - x]);
    });
    rows.sort(function(p, q){ return Math.abs(q[3]) - Math.abs(p[3]); });
    rows.slice(0, data.top).forEach(function(r){
      var tr = body.insertRow();
      var c0 = tr.insertCell(); c0.className = 'l'; c0.textContent = r[0];
      tr.insertCell().textContent = fmt(r[1]);
      tr.insertCell().textContent = fmt(r[2]);
      var d = tr.insertCell(); d.textContent = (r[3] >= 0 ? '+' : '') + r[3].toFixed(data.decimals);
      d.className = r[3] >= 0 ? 'up' : 'down';
    });
  }
  selA.addEventListener('change', update); selB.addEventListener('change', update);
  update();
  document.body.setAttribute('data-ready', '1');
})();
"""


def esc(s) -> str:
    """HTML-escaped text of any value ('' for None)."""
    return '' if s is None else html.escape(str(s), quote=True)


def table_html(header: Sequence[str], rows: Iterable[Sequence[str]], sortable: bool = False, cls: str = '',
               left: int = 1, raw: bool = False, table_id: Optional[str] = None) -> str:
    """A table: the header is escaped; cells are escaped unless ``raw`` (already HTML).

    Args:
        header: Column titles.
        rows: Cells per row (a cell may be ``(html, sort value)`` when ``raw``).
        sortable: Headers sort the rows on click (inline script).
        cls: CSS class of the table.
        left: The first ``left`` columns are left-aligned.
        raw: Cells are HTML (from this package), not text.
        table_id: The table's id.
    """
    th_cls = 'sortable' if sortable else ''
    head = ''.join(f'<th class="{th_cls}{" l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            sort = None
            if isinstance(c, tuple):
                c, sort = c
            text = c if raw else esc(c)
            attr = f' data-v="{esc(sort)}"' if sort is not None else ''
            align = ' class="l"' if i < left else ''
            cells.append(f'<td{align}{attr}>{text}</td>')
        body.append('<tr>' + ''.join(cells) + '</tr>')
    ident = f' id="{esc(table_id)}"' if table_id else ''
    return (f'<table class="{esc(cls)}"{ident}><thead><tr>{head}</tr></thead><tbody>' + '\n'.join(body)
            + '</tbody></table>')


def page(title: str, nav: Sequence[str], sections: Sequence[str], data: Optional[dict] = None) -> str:
    """The whole page: head with inline CSS, navigation, sections, embedded data and the script."""
    links = ''.join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    blob = ''
    if data is not None:   # JSON in a script tag: '</' escaped so no value can close the tag
        blob = ('<script type="application/json" id="class-data">'
                + json.dumps(data, allow_nan=False).replace('</', '<\\/') + '</script>')
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f'<title>{esc(title)}</title><style>{CSS}</style></head><body>'
            f'<h1>{esc(title)}</h1><nav>{links}</nav>' + '\n'.join(sections) + blob
            + f'<script>{JS}</script></body></html>\n')
