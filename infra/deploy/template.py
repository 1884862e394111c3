"""The templating the manifests need, and no more: ``{{ name }}`` takes a value from the context,
``{{ name | q }}`` the same as a JSON string (YAML reads it back unchanged); a placeholder alone on
its line whose value is a ``Block`` becomes that block's lines, each indented to the placeholder's
column, and an empty block removes the line. Comments and layout of a template stay as written.

    >>> fill("a:\\n  {{ b }}\\nc: {{ c | q }}\\n", {"b": Block("x: 1\\ny: 2"), "c": "0 2 * * *"}, "t")
    'a:\\n  x: 1\\n  y: 2\\nc: "0 2 * * *"\\n'
"""

from __future__ import annotations

import json
import re

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*(\|\s*q\s*)?\}\}")
ALONE = re.compile(r"^( *)\{\{\s*(\w+)\s*\}\}\n?$")


class Block(str):
    """Lines placed at the indentation of the placeholder that stands alone on its line."""


class TemplateError(Exception):
    pass


def fill(template: str, context: dict, name: str) -> str:
    out = []
    for number, line in enumerate(template.splitlines(keepends=True), 1):
        alone = ALONE.match(line)
        if alone and isinstance(context.get(alone.group(2)), Block):
            indent, block = alone.group(1), context[alone.group(2)]
            out += [f"{indent}{text}\n" if text else "\n" for text in block.splitlines()]
            continue

        def value(m: re.Match, number: int = number) -> str:
            if m.group(1) not in context:
                raise TemplateError(f"{name}:{number}: no value for {{{{ {m.group(1)} }}}}")
            v = context[m.group(1)]
            if isinstance(v, Block):
                raise TemplateError(f"{name}:{number}: {m.group(1)} is a block: put it alone on its line")
            return json.dumps(str(v)) if m.group(2) else str(v)

        out.append(PLACEHOLDER.sub(value, line))
    return "".join(out)
