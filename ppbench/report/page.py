"""The report page (``index.html``): findings first, then the pictures, then the table, grouped by
workload and model, sortable and filterable in the page. Self-contained: a few lines of inline
JavaScript, no network access needed to view it."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from ppbench.report.findings import KINDS, Finding, workload_label

__all__ = ["render", "TABLE_COLUMNS"]

#: table column -> header (units in brackets); the order of the page's table
TABLE_COLUMNS = {"schedule": "schedule", "impl": "impl", "transport": "transport", "world_size": "ranks", "pp": "p",
                 "dp": "d", "microbatches": "m", "chunks": "v", "threads": "threads", "step_time_ms": "step (ms)",
                 "step_time_ms_min": "min (ms)", "step_time_ms_max": "max (ms)", "throughput": "samples/s",
                 "bubble": "bubble (share)", "bubble_theory": "theory (share)", "bubble_simulated": "sim (share)",
                 "efficiency": "efficiency", "overlap": "overlap (share)", "exposed_comm_ms": "waiting (ms)",
                 "peak_in_flight": "in flight (microbatches)", "peak_act_kib": "saved (KiB)", "runs": "runs",
                 "baseline_step_time_ms": "baseline step (ms)", "step_time_ratio": "step / baseline"}

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1250px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .lead{color:#555;margin-top:0} section{margin:1.5em 0}
#findings{background:#f3f7fb;border-left:4px solid #4c72b0;padding:.6em 1.2em}
#findings li{margin:.35em 0} #findings h3{margin:.8em 0 .2em;font-size:1em;color:#334}
a.to{font-size:.85em;margin-left:.4em}
figure{margin:1.2em 0;border-top:1px solid #eee;padding-top:.6em} img{max-width:100%}
figcaption{color:#444;font-size:.9em} .env{background:#f6f6f6;padding:.4em 1em;font-size:.9em}
table{border-collapse:collapse;font-size:12px;margin-bottom:1em}
th{cursor:pointer;background:#eef;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"} th.sorted-desc::after{content:" \\25BC"}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} td:first-child,th:first-child{text-align:left}
tr.hit{background:#fff3b0} #filter{font-size:1em;padding:.3em;width:24em}"""

_SCRIPT = """
function cellValue(row, i) {
  const text = row.cells[i].textContent.trim();
  const number = parseFloat(text);
  return (text !== '' && text !== '-' && !isNaN(number) && /^[-+0-9.eE]+$/.test(text)) ? number : text;
}
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
  const ascending = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(ascending ? 'sorted-asc' : 'sorted-desc');
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, i), y = cellValue(b, i);
    const order = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order;
  });
  rows.forEach(r => body.appendChild(r));
}
function filterRows(text) {
  const words = text.toLowerCase().split(/\\s+/).filter(w => w);
  document.querySelectorAll('table.results tbody tr').forEach(r => {
    const line = r.textContent.toLowerCase();
    r.style.display = words.every(w => line.includes(w)) ? '' : 'none';
  });
}
function showRows(keys) {
  document.getElementById('filter').value = '';
  filterRows('');
  document.querySelectorAll('tr.hit').forEach(r => r.classList.remove('hit'));
  let first = null;
  keys.forEach(k => {
    const r = document.getElementById('row-' + k);
    if (r) { r.classList.add('hit'); first = first || r; }
  });
  if (first) first.scrollIntoView({block: 'center'});
  return false;
}
document.addEventListener('DOMContentLoaded', () => {
  document.querySelectorAll('table.results th').forEach(th => th.addEventListener('click', () => sortTable(th)));
  document.getElementById('filter').addEventListener('input', e => filterRows(e.target.value));
});
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _finding_item(f: Finding, figures: set[str]) -> str:
    links = []
    if f.figure in figures:
        links.append(f'<a class="to" href="#fig-{_e(f.figure)}">picture</a>')
    if f.rows:
        keys = ",".join(f"'{_e(k)}'" for k in f.rows)
        links.append(f'<a class="to" href="#table" onclick="return showRows([{keys}])">rows ({len(f.rows)})</a>')
    return f"<li>{_e(f.text)}{''.join(links)}</li>"


def _findings(found: list[Finding], figures: set[str]) -> str:
    heads = [f for f in found if f.headline]
    details = [f for f in found if not f.headline]
    body = "".join(f"<h3>{_e(title)}</h3><ul>" + "".join(_finding_item(f, figures) for f in heads if f.kind == kind)
                   + "</ul>" for kind, title in KINDS.items() if any(f.kind == kind for f in heads))
    body = body or "<p>Too few configurations to compare.</p>"
    more = ""
    if details:
        more = (f"<details><summary>All {len(details)} detailed findings</summary><ul>"
                + "".join(_finding_item(f, figures) for f in details) + "</ul></details>")
    return f'<section id="findings"><h2>Findings</h2>{body}{more}</section>'


def _cell(value: object, column: str) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if column in ("throughput", "step_time_ms", "step_time_ms_min", "step_time_ms_max", "baseline_step_time_ms",
                      "peak_act_kib", "exposed_comm_ms"):
            return f"{value:.4g}"
        return f"{value:.3f}"
    return _e(value)


def _tables(table: pd.DataFrame) -> str:
    columns = [c for c in TABLE_COLUMNS if c in table.columns]
    parts = ['<section id="table"><h2>Every configuration</h2>'
             '<p>Medians over every measured step of every run. Click a header to sort; type to filter '
             '(all words must appear in the row).</p>'
             '<input id="filter" type="search" placeholder="filter, e.g. 1f1b synthetic"></section>']
    grouped = table.assign(group=table.apply(workload_label, axis=1))
    for group, sel in grouped.groupby("group", sort=True):
        head = "".join(f"<th>{_e(TABLE_COLUMNS[c])}</th>" for c in columns)
        rows = "".join(f'<tr id="row-{_e(r["config_key"])}">' + "".join(f"<td>{_cell(r[c], c)}</td>" for c in columns)
                       + "</tr>" for _, r in sel.iterrows())
        parts.append(f'<h3>{_e(group)} ({len(sel)} configurations)</h3><table class="results"><thead><tr>{head}</tr>'
                     f"</thead><tbody>{rows}</tbody></table>")
    return "\n".join(parts)


def _advice(advice: list[dict]) -> str:
    if not advice:
        return ""
    blocks = []
    for a in advice:
        verified = a.get("verified") or []
        rows = "".join(
            f"<tr><td>{_e(v['schedule'])}</td><td>{v['p']}</td><td>{v['d']}</td><td>{v['m']}</td><td>{v['v']}</td>"
            f"<td>{v['predicted_rank']}</td><td>{1e3 * v['predicted_iteration_time']:.4g}</td>"
            f"<td>{_cell(1e3 * v['measured_iteration_time'], 'step_time_ms')}</td>"
            f"<td>{_cell(100 * v['error'], 'step_time_ms')}</td></tr>" for v in verified)
        top = a["ranked"][0] if a["ranked"] else None
        best = (f"predicted best: {top['schedule']} p={top['p']} d={top['d']} m={top['m']} v={top['v']} "
                f"({1e3 * top['iteration_time']:.4g} ms)") if top else "no candidate fits"
        table = ('<table class="results"><thead><tr><th>schedule</th><th>p</th><th>d</th><th>m</th><th>v</th>'
                 "<th>predicted rank</th><th>predicted (ms)</th><th>measured (ms)</th><th>error (%)</th></tr></thead>"
                 f"<tbody>{rows}</tbody></table>") if verified else "<p>Not verified (run with --verify K).</p>"
        blocks.append(f"<h3>{_e(a['model'])} on {a['world_size']} ranks, global batch {a['global_batch']}</h3>"
                      f"<p>{a['considered']} candidates, {len(a['ranked'])} ranked; {_e(best)}.</p>{table}")
    return '<section id="advice"><h2>Advice: predicted and measured</h2>' + "".join(blocks) + "</section>"


def render(table: pd.DataFrame, env: list[str], images: list[Path], skipped: list[str], found: list[Finding],
           theory_text: str, captions: dict[str, str], advice: list[dict] | None = None) -> str:
    figures = {i.stem for i in images}
    pictures = "\n".join(
        f'<figure id="fig-{_e(i.stem)}"><img src="{_e(i.name)}" alt="{_e(i.stem)}">'
        f"<figcaption>{_e(captions.get(i.stem.split('-')[0], i.stem))}</figcaption></figure>" for i in images)
    warn = "".join(f"<li>{_e(s)}</li>" for s in skipped)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ppbench report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>
<h1>ppbench report</h1>
<p class="lead">{len(table)} configurations measured{f"; {len(skipped)} files skipped (listed at the end)" if skipped
else ""}. Every sentence below is computed from the result files.</p>
{_findings(found, figures)}
<div class="env"><b>Measured on</b><ul>{"".join(f"<li>{_e(e)}</li>" for e in env)}</ul></div>
{_advice(advice or [])}
<section id="pictures"><h2>Pictures</h2><p>Bubble = share of the step a rank is idle (mean over ranks);
{_e(theory_text)}.</p>{pictures}</section>
{_tables(table)}
{f"<h2>Skipped files</h2><ul>{warn}</ul>" if skipped else ""}
</body></html>
"""
