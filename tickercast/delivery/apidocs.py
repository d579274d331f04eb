"""`/docs`: the API described from its own OpenAPI schema, as one self-contained page.

FastAPI's Swagger UI loads its script and stylesheet from a CDN, so on a machine without
internet `/docs` was blank. This page needs nothing but the schema: every route, what it
takes and what it answers, with the schema at /openapi.json one link away.
"""

from __future__ import annotations

import html
import json


def _ref(schema: dict) -> str:
    """A schema's short name: 'Forecast', 'array of ModelInfo', 'string'."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"array of {_ref(schema.get('items') or {})}"
    if "anyOf" in schema:
        return " or ".join(_ref(s) for s in schema["anyOf"])
    return str(schema.get("type", "any"))


def _operation(path: str, verb: str, op: dict) -> str:
    esc = html.escape
    params = "".join(
        f"<li><code>{esc(p['name'])}</code> ({esc(p.get('in', ''))}, "
        f"{esc(_ref(p.get('schema') or {}))}{', required' if p.get('required') else ''})"
        "</li>"
        for p in op.get("parameters") or []
    )
    body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    answers = "".join(
        f"<li><code>{esc(code)}</code> {esc(r.get('description', ''))}"
        + "".join(
            f" <span class='muted'>{esc(kind)}: {esc(_ref(c.get('schema') or {}))}</span>"
            for kind, c in (r.get("content") or {}).items()
        )
        + "</li>"
        for code, r in (op.get("responses") or {}).items()
    )
    return (
        f'<section class="card"><h2><code>{esc(verb.upper())} {esc(path)}</code></h2>'
        f"<p>{esc(op.get('summary', ''))}</p>"
        f"<p class='muted'>{esc(op.get('description', ''))}</p>"
        + (f"<h3>Parameters</h3><ul>{params}</ul>" if params else "")
        + (f"<h3>Body</h3><p>{esc(_ref(body.get('schema') or {}))}</p>" if body else "")
        + f"<h3>Answers</h3><ul>{answers}</ul></section>"
    )


def _schemas(components: dict) -> str:
    esc = html.escape
    parts = []
    for name, schema in sorted((components.get("schemas") or {}).items()):
        fields = "".join(
            f"<li><code>{esc(field)}</code>: {esc(_ref(s))}"
            f"{' — ' + esc(s['description']) if s.get('description') else ''}</li>"
            for field, s in (schema.get("properties") or {}).items()
        )
        parts.append(
            f'<details id="schema-{esc(name)}"><summary><code>{esc(name)}</code></summary>'
            f"<ul>{fields}</ul></details>"
        )
    return "".join(parts)


def api_page(openapi: dict) -> str:
    """The whole page: one card per route, then every schema, then the raw schema link."""
    from tickercast.delivery.page import document, esc

    info = openapi.get("info") or {}
    ops = "".join(
        _operation(path, verb, op)
        for path, verbs in (openapi.get("paths") or {}).items()
        for verb, op in verbs.items()
    )
    body = (
        f"<header><h1>{esc(info.get('title', 'API'))} API</h1>"
        f'<p class="muted">{esc(info.get("description", ""))} · <a href="/">all champions</a>'
        ' · <a href="/openapi.json">openapi.json</a></p></header>'
        f'<main>{ops}<section class="card"><h2>Schemas</h2>'
        f"{_schemas(openapi.get('components') or {})}</section>"
        f'<details><summary>The schema as JSON</summary><pre class="scroll">'
        f"{html.escape(json.dumps(openapi, indent=1)[:200_000])}</pre></details></main>"
    )
    return document(f"{info.get('title', 'API')} API", body)
