"""Render a report's blocks as Markdown and as one self-contained HTML page (plots inlined as data URLs)."""

from __future__ import annotations

import base64
import html

from editcaption.evaluation.report.tables import Block


def _md_cell(text: str) -> str:
    """Cell text that cannot break a Markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown; plots are linked by file name, next to the report."""
    lines: list[str] = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            lines += [payload, ""]
        elif kind == "alert":
            lines += [f"> **{payload}**", ""]
        elif kind == "img":
            lines += [f"![{payload}]({payload})", ""]
        else:
            header, rows = payload
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f3f3f3}.alert{background:#fdecea;border-left:4px solid #c44e52;
padding:0.5em 1em}img{max-width:100%;display:block;margin:1em 0}"""


def html_page(blocks: list[Block], images: dict[str, bytes]) -> str:
    """The blocks as one HTML page, every text escaped and every plot inlined, so it can be mailed alone."""
    out = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>Evaluation report</title>',
        f"<style>{_STYLE}</style></head><body>",
    ]
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(payload)}</p>")
        elif kind == "alert":
            out.append(f'<p class="alert"><strong>{html.escape(payload)}</strong></p>')
        elif kind == "img":
            data = base64.b64encode(images[payload]).decode()
            out.append(f'<img alt="{html.escape(payload)}" src="data:image/png;base64,{data}">')
        else:
            header, rows = payload
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                + "</tr></thead><tbody>"
            )
            out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
