#!/usr/bin/env python3
"""Reference chat-template renderer for tests/engine/chat_templates_test.ts.

Renders Jinja chat templates with Debian's python3-jinja2 the way Hugging Face transformers does
(transformers/utils/chat_template_utils.py): an ImmutableSandboxedEnvironment with trim_blocks
and lstrip_blocks, the loopcontrols extension and a pass-through {% generation %} tag, the tojson
filter that keeps non-ASCII, and the raise_exception and strftime_now globals. It shares no code
with loupe or llama.cpp.

stdin: a JSON array of cases {template, messages, tools (or null), bos_token, eos_token,
add_generation_prompt, now_ms, kwargs}. stdout: a JSON array of {text} or {error}.
"""
import datetime
import json
import sys

from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    """transformers' {% generation %} ... {% endgeneration %} block, rendered as its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render(case):
    now = datetime.datetime.fromtimestamp(case["now_ms"] / 1000)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    template = env.from_string(case["template"])
    return template.render(
        messages=case["messages"],
        tools=case["tools"],
        add_generation_prompt=case["add_generation_prompt"],
        bos_token=case["bos_token"],
        eos_token=case["eos_token"],
        **case["kwargs"],
    )


def main():
    out = []
    for case in json.load(sys.stdin):
        try:
            out.append({"text": render(case)})
        except Exception as e:  # a template that refuses the conversation, or does not parse
            out.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
