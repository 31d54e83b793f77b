"""A run as one browsable HTML folder: ``outputs/<run>/html/``.

    python -m lib.html_export outputs/tiny        # writes outputs/tiny/html/index.html

``index.html`` lists the stages in recipe order (status, time, key metric) and links each
executed notebook, converted with nbconvert (``<NN_stage>.html``), and ``REPORT.md``
(``report.html``, its plots embedded). Every page is a plain file with its images inline, so the
folder can be zipped or served statically and read without a Jupyter server. Widget outputs
(progress bars of notebooks run before :mod:`lib.bars`) are replaced by their text form:
a widget needs its kernel, or JavaScript from the network, to draw.
"""
from __future__ import annotations

import base64
import html
import json
import mimetypes
import re
import shutil
import sys
from pathlib import Path

from lib import stages as stages_mod

HTML_DIR = "html"
WIDGET = "application/vnd.jupyter.widget-view+json"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: .6rem; overflow-x: auto; }}
.error {{ color: #b00020; font-weight: 600; }} .ok {{ color: #0a7d32; }} .missing {{ color: #888; }}
</style></head><body>
{body}
</body></html>
"""


def _widgets_to_text(nb) -> None:
    """Replace widget outputs by their text/plain form (or drop them) and forget widget state."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET in data:
                data.pop(WIDGET)
                if not data:
                    continue
            kept.append(out)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)


def _errors(nb) -> list[str]:
    return [f"{o.get('ename', 'Error')}: {o.get('evalue', '')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def notebook_html(path: Path, title: str) -> tuple[str, list[str]]:
    """An executed notebook as a standalone HTML page, and the errors its outputs hold."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    _widgets_to_text(nb)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body, _errors(nb)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_html(text: str, base: Path) -> str:
    """Markdown (REPORT.md) as HTML; images relative to ``base`` are embedded, other relative links
    point back to ``base`` from its ``html/`` folder."""
    import mistune

    def image(m: re.Match) -> str:
        target = base / m.group(2)
        return f"![{m.group(1)}]({_data_uri(target) if target.is_file() else m.group(2)})"

    def link(m: re.Match) -> str:
        href = m.group(2)
        if re.match(r"^[a-z]+:|^#|^/", href):
            return m.group(0)
        return f"[{m.group(1)}](../{href})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", image, text)
    text = re.sub(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)", link, text)
    return mistune.html(text)


def _key_metric(stage: stages_mod.Stage, directory: Path) -> str:
    f = directory / "metrics.json"
    if not stage.key_metric or not f.is_file():
        return ""
    value = json.loads(f.read_text()).get(stage.key_metric)
    return f"{stage.key_metric} {value:.4g}" if isinstance(value, float) else f"{stage.key_metric} {value}"


def _elapsed(manifest: dict | None) -> str:
    if not manifest or "elapsed_s" not in manifest:
        return ""
    m, s = divmod(int(round(manifest["elapsed_s"])), 60)
    return f"{m}m{s:02d}s" if m else f"{manifest['elapsed_s']:.1f}s"


def export_run(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/html/``: one page per executed stage notebook, ``report.html`` from
    ``REPORT.md`` when present, and ``index.html`` linking them. Returns the index's path.

    The folder is rebuilt from scratch each time. A notebook that cannot be converted is listed
    with the reason instead of stopping the export.
    """
    run_dir = Path(run_dir).resolve()
    out = run_dir / HTML_DIR
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    rows = []
    for s in stages_mod.STAGES:
        d = run_dir / s.name
        nb_path = d / f"{s.name}.ipynb"
        if not nb_path.is_file():
            continue
        manifest_f = d / "manifest.json"
        manifest = json.loads(manifest_f.read_text()) if manifest_f.is_file() else None
        try:
            page, errors = notebook_html(nb_path, f"{run_dir.name} · {s.name}")
        except Exception as e:  # noqa: BLE001 - one bad notebook must not hide the others
            rows.append((s, None, f'<span class="error">not exported: {html.escape(repr(e))}</span>', ""))
            continue
        (out / f"{s.name}.html").write_text(page, encoding="utf-8")
        if errors:
            status = f'<span class="error">error: {html.escape(errors[0])}</span>'
        elif manifest:
            status = '<span class="ok">completed</span>'
        else:
            status = '<span class="missing">incomplete (no manifest)</span>'
        rows.append((s, f"{s.name}.html", status, f"{_elapsed(manifest)}"))

    parts = [f"<h1>Run <code>{html.escape(run_dir.name)}</code></h1>"]
    report_md = run_dir / "REPORT.md"
    if report_md.is_file():
        body = markdown_html(report_md.read_text(encoding="utf-8"), run_dir)
        (out / "report.html").write_text(_PAGE.format(title=f"{run_dir.name} · REPORT", body=body), encoding="utf-8")
        parts.append('<p><a href="report.html"><strong>REPORT</strong></a> — the run\'s results (REPORT.md).</p>')
    parts.append("<h2>Stages</h2>")
    if rows:
        parts.append("<table><tr><th>stage</th><th>title</th><th>status</th><th>time</th><th>key metric</th></tr>")
        for s, href, status, elapsed in rows:
            name = f'<a href="{href}">{s.name}</a>' if href else s.name
            metric = html.escape(_key_metric(s, run_dir / s.name))
            parts.append(f"<tr><td>{name}</td><td>{html.escape(s.title)}</td><td>{status}</td>"
                         f"<td>{elapsed}</td><td>{metric}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No executed stage notebooks in this run yet.</p>")
    params = run_dir / "params.yaml"
    if params.is_file():
        parts.append(f"<h2>Parameters</h2><details><summary>params.yaml</summary>"
                     f"<pre>{html.escape(params.read_text(encoding='utf-8'))}</pre></details>")
    index = out / "index.html"
    index.write_text(_PAGE.format(title=f"{run_dir.name} · recipe run", body="\n".join(parts)), encoding="utf-8")
    return index


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lib.html_export outputs/<run>")
    print(export_run(sys.argv[1]))
