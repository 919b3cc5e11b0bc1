#!/usr/bin/env python3
"""Writes the case tables of tests/text/test_jinja.cpp (between @@CASES_BEGIN@@ and @@CASES_END@@)
from Python Jinja2, configured exactly as tools/make_chat_goldens.py configures it (the way
transformers' apply_chat_template does). The C++ test holds the results as literals and needs no
Python; this script is how they were obtained, and how to check them again.

Tables:
  renders  {template, context (JSON), output}: the output is what Python Jinja2 renders.
  errors   {template, context, what s0's message must contain}: Python Jinja2 raises on every
           one of them too (checked here); s0 must throw s0::Error naming the template, the line
           and what was wrong, never crash.
  refused  {template, context, what s0's message must contain}: Python Jinja2 renders these, s0
           deliberately refuses them (constructs outside the subset chat templates use); the
           comment beside each shows what Jinja2 renders.

Usage: python3 tools/make_jinja_tests.py          rewrite the tables in the test
       python3 tools/make_jinja_tests.py --check  exit 1 if the tables differ from Jinja2's results
"""
import json
import os
import sys

import jinja2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_chat_goldens import make_env  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = os.path.join(ROOT, "tests", "text", "test_jinja.cpp")

# ------------------------------------------------------------------------------------------------
# Cases that render: (template, context). Grouped by the C++ table they go to.

RENDERS = {
    # Tags, whitespace control, comments, newlines, what is and is not a tag.
    "kLexing": [
        ("a {{- ' b ' -}} c", {}),
        ("a\n  {%- if true %}x{% endif %}", {}),
        ("{% if true -%}\n\n  x{%- endif %}\ny", {}),
        ("a\n  {#- comment -#}\n  b", {}),
        ("{# {{ not_rendered }} {% if %} #}x", {}),
        ("{#\nmulti\nline\n#}\nx", {}),
        ("{% if true %}\nx\n{% endif %}\n", {}),
        ("{{ 'x' }}\ny", {}),
        ("\t  {% if true %}x{% endif %}", {}),
        ("a \t{% if true %}x{% endif %}", {}),
        ("  {%+ if true %}x{% endif %}", {}),
        ("{% if true +%}\nx{% endif %}", {}),
        ("  {# c #}\nx", {}),
        ("x\n\n", {}),
        ("x\r\ny\rz\r\n", {}),
        ("{ {x} } %} #} }} {", {}),
        ("{{ '}}' }}{{ '%}' }}{{ \"{{\" }}", {}),
        ("{% set s = '{% %}' %}{{ s }}", {}),
        ("{{ {'a': {'b': [1, {'c': 2}]}} }}", {}),
        ("{{\n  1\n  +\n  2\n}}", {}),
        ("{%\nif\ntrue\n%}y{%\nendif\n%}", {}),
    ],
    # String and number literals.
    "kLiterals": [
        (r"{{ 'a\nb' }}|{{ 'tab\there' }}|{{ 'cr\r' }}", {}),
        (r"{{ '\x41\u00e9\U0001F600' }}", {}),
        (r"{{ '\101\60' }}", {}),
        (r"{{ 'back\\slash' }}|{{ 'q\'s' }}|{{ " + '"d\\"q"' + " }}", {}),
        (r"{{ 'unknown \q escape' }}", {}),
        ("{{ 'line\\\ncontinued' }}", {}),
        ("{{ 'a' \"b\" 'c' }}", {}),
        ("{{ 1_000_000 }} {{ 1e3 }} {{ 1.5e-3 }} {{ 2.50 }} {{ 1E2 }} {{ 0 }} {{ 1_0.0_1 }}", {}),
        ("{{ true }} {{ True }} {{ false }} {{ False }} {{ none }} {{ None }}", {}),
        ("{{ [] }} {{ () }} {{ (1,) }} {{ (1, 'a') }} {{ [1, [2]] }} {{ {} }}", {}),
        ("{{ [1, 2,] }} {{ {'a': 1,} }} {{ (1, 2,) }}", {}),
        ("{{ {'a': 1, 'a': 2} }}", {}),
        ("{{ 12345678901234567 }} {{ 0.1 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-4 }} {{ 1e-5 }} {{ -0.0 }}", {}),
        ("{{ 'é' }}{{ \"日本\" }}", {}),
        ("{{ 1e999 }} {{ -1e999 }} {{ 1e-400 }} {{ 2.5e-320 }}", {}),
    ],
    # Operators, their precedence and Python's semantics.
    "kExpressions": [
        ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 * 3 ** 2 }} {{ 10 - 4 - 3 }}", {}),
        ("{{ 2 ** 3 ** 2 }}", {}),
        ("{{ -2 ** 2 }} {{ - 3 + 5 }} {{ +3 }} {{ -(-3) }}", {}),
        ("{{ -3|abs }} {{ -x|abs }}", {"x": 4}),
        ("{{ 2 * 3 ~ 1 }} {{ 'a' ~ 2 * 3 }} {{ 1 ~ 2 ~ 3 }}", {}),
        ("{{ 7 / 2 }} {{ 6 / 2 }} {{ 7 // 2 }} {{ 7 // -2 }} {{ -7 % 3 }} {{ 7 % -3 }}", {}),
        ("{{ 2 ** -1 }} {{ 2 ** 0.5 }} {{ 2.0 ** 2 }} {{ 4 ** 0 }}", {}),
        ("{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }}", {}),
        ("{{ true + 1 }} {{ true * 3 }} {{ false - 1 }}", {}),
        ("{{ 9223372036854775807 - 1 + 1 }} {{ -9223372036854775807 - 1 }} {{ (-2) ** 63 }} {{ 3 ** 39 }}"
         " {{ (-9223372036854775807 - 1) % -1 }} {{ 1 ** 1000000000000000000 }} {{ (-1) ** 1000000000000000001 }}", {}),
        ("{{ 'ab' * 2 }} {{ 2 * 'ab' }} {{ [1] * 3 }} {{ 'x' * 0 }} {{ [1, 2] + [3] }}", {}),
        ("{{ not true }} {{ not 0 }} {{ not not 'x' }} {{ not 1 == 2 }}", {}),
        ("{{ true or false and false }} {{ (true or false) and false }}", {}),
        ("{{ 0 or '' or 'last' }} {{ 'a' and 'b' }} {{ 0 and 1 }} {{ [] or none }}", {}),
        ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 < 3 > 2 }} {{ 1 == 1 == 1 }} {{ 2 != 2 }}", {}),
        ("{{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' == 'a' }} {{ [1, 2] == [1, 2] }} {{ none == none }}", {}),
        ("{{ 'a' < 'b' }} {{ 'Z' < 'a' }} {{ 'é' > 'z' }} {{ 1.5 >= 1 }} {{ 2 <= 2 }}", {}),
        ("{{ 'b' in 'abc' }} {{ 'z' not in 'abc' }} {{ not 'z' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in d }} {{ 1 in d }}",
         {"d": {"k": 0}}),
        ("{{ 'a' if true else 'b' }} {{ 'a' if false else 'b' if false else 'c' }} [{{ 'a' if false }}]", {}),
        ("{{ 1 + 2 if false else 10 }} {{ 'x' ~ 'y' if true }}", {}),
        ("{{ d.a }} {{ d['a'] }} {{ d.b.c }} {{ d['b']['c'] }} {{ xs.1 }} {{ xs[-1] }} {{ xs[0] }}",
         {"d": {"a": 1, "b": {"c": 2}}, "xs": [5, 6, 7]}),
        ("{{ d['items'] }} {{ d.items()|list }}", {"d": {"items": "value"}}),
        ("[{{ d.missing }}] [{{ xs[10] }}] [{{ n.attr }}] {{ d.missing is defined }}",
         {"d": {}, "xs": [1], "n": None}),
        ("{{ 'héllo'[1] }}{{ 'héllo'[-1] }}", {}),
    ],
    # Slicing (Python's rules for negative, missing and out-of-range bounds).
    "kSlicing": [
        ("{{ xs[1:] }} {{ xs[:2] }} {{ xs[:] }} {{ xs[1:-1] }} {{ xs[-2:] }}", {"xs": [1, 2, 3, 4]}),
        ("{{ xs[::2] }} {{ xs[1::2] }} {{ xs[::-1] }} {{ xs[::-2] }} {{ xs[3:0:-1] }}", {"xs": [1, 2, 3, 4]}),
        ("{{ xs[10:] }} {{ xs[-10:2] }} {{ xs[2:1] }} {{ xs[:100] }} {{ xs[-100:-50] }}", {"xs": [1, 2, 3, 4]}),
        ("{{ xs[none:2] }} {{ xs[1:none] }} {{ xs[::none] }}", {"xs": [1, 2, 3, 4]}),
        ("{{ s[1:3] }}|{{ s[::-1] }}|{{ s[-3:] }}|{{ s[5:] }}", {"s": "añb日c"}),
        ("{{ (1, 2, 3)[1:] }} {{ (1, 2)[::-1] }} {{ (1,)[:0] }} {{ [(1, 2)][0][1:] }}", {}),
    ],
    # Statements: if/elif/else, set, set blocks, namespaces, scoping.
    "kStatements": [
        ("{% if x == 1 %}one{% elif x == 2 %}two{% elif x == 3 %}three{% else %}other{% endif %}", {"x": 2}),
        ("{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %}", {"x": 5}),
        ("{% if x %}yes{% endif %}|{% if not x %}no{% endif %}", {}),
        ("{% if [] %}a{% elif {} %}b{% elif '' %}c{% elif 0.0 %}d{% elif ' ' %}e{% endif %}", {}),
        ("{% if a %}{% if b %}ab{% else %}a{% endif %}{% else %}-{% endif %}", {"a": 1, "b": 0}),
        ("{% set x = 1 + 1 %}{% set y = x * 3 %}{{ x }}{{ y }}", {}),
        ("{% set x = 'outer' %}{% if true %}{% set x = 'inner' %}{% endif %}{{ x }}", {}),
        ("{% set x = 0 %}{% for i in [1, 2] %}{% set x = x + i %}[{{ x }}]{% endfor %}{{ x }}", {}),
        ("{% set x = 'ctx-shadowed' %}{{ x }}", {"x": "from context"}),
        ("{% set b %}  block {{ 1 + 1 }}\n{% endset %}[{{ b }}]{{ b|length }}", {}),
        ("{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
         "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
        ("{% set ns = namespace() %}{% set ns.added = 'late' %}{{ ns.added }} {{ ns.other is defined }}", {}),
        ("{% set ns = namespace(d) %}{{ ns.a }}{{ ns['b'] }}", {"d": {"a": 1, "b": 2}}),
        ("{% set ns = namespace(a=1) %}{{ ns }}", {}),
        ("{% set d = dict(a=1, b='x') %}{{ d }} {{ d.b }}", {}),
    ],
    # for loops: loop.*, else, inline filter, unpacking, break/continue, nesting, what iterates.
    "kLoops": [
        ("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
         "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {"xs": ["a", "b", "c"]}),
        ("{% for x in xs %}[{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}]{% endfor %}", {"xs": [1, 2, 3]}),
        ("{% for x in xs %}{{ loop.previtem is defined }}{{ loop.nextitem is defined }} {% endfor %}", {"xs": [1, 2]}),
        ("{% for x in xs %}{{ loop.depth }}{{ loop.depth0 }}{% endfor %}", {"xs": [1]}),
        ("{% for x in xs if x is odd %}{{ x }}:{{ loop.index }}/{{ loop.length }} {% endfor %}", {"xs": [1, 2, 3, 4, 5]}),
        ("{% for x in xs %}{{ x }}{% else %}empty{% endfor %}|{% for x in [] %}{{ x }}{% else %}none{% endfor %}",
         {"xs": [1]}),
        ("{% for x in [1, 2] if x > 5 %}{{ x }}{% else %}filtered out{% endfor %}", {}),
        ("{% for x in missing %}{{ x }}{% else %}undefined iterates as empty{% endfor %}", {}),
        ("{% for k in d %}{{ k }}{% endfor %} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
         {"d": {"z": 1, "a": 2}}),
        ("{% for c in 'añb' %}[{{ c }}]{% endfor %}", {}),
        ("{% for a, b in [[1, 2], (3, 4)] %}{{ a }}{{ b }} {% endfor %}", {}),
        ("{% for i in range(10) %}{% if i is even %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}"
         "{{ i }}{% endfor %}", {}),
        ("{% for i in range(3) %}{% for j in range(3) %}{% if j > i %}{% break %}{% endif %}{{ i }}{{ j }} "
         "{% endfor %}{% endfor %}", {}),
        ("{% for row in rows %}{% set outer = loop %}{% for x in row %}{{ outer.index }}.{{ loop.index }}={{ x }} "
         "{% endfor %}{% endfor %}", {"rows": [["a", "b"], ["c"]]}),
        ("{% for x in [1] %}{% endfor %}[{{ x }}][{{ loop }}]", {}),
        ("{{ range(1, 9223372036854775807, 9223372036854775807)|list }}"
         " {{ range(-2, -9223372036854775807 - 1, -9223372036854775807)|list }}", {}),
        ("{{ range(3)|list }} {{ range(2, 5)|list }} {{ range(10, 0, -3)|list }} {{ range(0)|list }} "
         "{{ range(5, 2)|list }}", {}),
    ],
    # Macros: parameters, defaults, keyword arguments, scope, recursion, use in expressions.
    "kMacros": [
        ("{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 2) }} "
         "{{ m(1, c=3) }} {{ m(a=4, b=5) }}", {}),
        ("{% macro m(a, b) %}[{{ a }}][{{ b }}]{{ b is defined }}{% endmacro %}{{ m(1) }}", {}),
        ("{% macro m(a, b=a ~ '!') %}{{ b }}{% endmacro %}{{ m('x') }}", {}),
        ("{% macro m() %}{{ g }}{% endmacro %}{% set g = 'late global' %}{{ m() }}", {}),
        ("{% macro m(x) %}{% set x = x * 2 %}{{ x }}{% endmacro %}{% set x = 1 %}{{ m(5) }}{{ x }}", {}),
        ("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}"
         "{{ fact(5) }}", {}),
        ("{% macro m(s) %}<{{ s }}>{% endmacro %}{{ m('a')|length }} {{ m('b') ~ '!' }} {{ m('c') is string }}", {}),
        ("{% macro m() %}\n  body\n{% endmacro %}[{{ m() }}]", {}),
    ],
    # Tests (`is`), one by one.
    "kTests": [
        ("{{ x is defined }}{{ u is defined }}{{ x is undefined }}{{ u is undefined }}{{ u is not defined }}", {"x": 0}),
        ("{{ n is none }}{{ 0 is none }}{{ u is none }}", {"n": None}),
        ("{{ 's' is string }}{{ 1 is string }}{{ 1 is number }}{{ 1.5 is number }}{{ true is number }}"
         "{{ 's' is number }}", {}),
        ("{{ 1 is integer }}{{ 1.0 is integer }}{{ 1.0 is float }}{{ 1 is float }}{{ true is integer }}", {}),
        ("{{ true is boolean }}{{ 1 is boolean }}{{ true is true }}{{ 1 is true }}{{ false is false }}"
         "{{ 0 is false }}", {}),
        ("{{ d is mapping }}{{ xs is mapping }}{{ ns is mapping }}{{ xs is iterable }}{{ 's' is iterable }}"
         "{{ 1 is iterable }}{{ d is sequence }}{{ 1 is sequence }}", {"d": {}, "xs": []}),
        ("{{ range is callable }}{{ d.get is callable }}{{ 's'.strip is callable }}{{ 's' is callable }}", {"d": {}}),
        ("{{ 3 is odd }}{{ 3 is even }}{{ -3 is odd }}{{ 0 is even }}{{ 4.0 is even }}{{ 3.0 is odd }}", {}),
        ("{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(4) }}{{ -9 is divisibleby 3 }}"
         "{{ (-9223372036854775807 - 1) is divisibleby(-1) }}", {}),
        ("{{ 1 is eq 1 }}{{ 1 is equalto 2 }}{{ 1 is ne 2 }}{{ 1 is lt 2 }}{{ 2 is le 2 }}{{ 3 is gt 2 }}"
         "{{ 2 is ge 3 }}{{ 1 is lessthan 2 }}{{ 1 is greaterthan 2 }}", {}),
        ("{{ 2 is in xs }}{{ 'a' is in 'cat' }}{{ 'k' is in d }}{{ 3 is not in(xs) }}", {"xs": [1, 2], "d": {"k": 1}}),
        ("{{ 2 is in [1, 2] }}{{ 'k' is in {'k': 1} }}{{ [1] is sameas [1] }}{{ 3 is not in [1] }}", {}),
        ("{{ x is sameas x }}{{ xs is sameas ys }}{{ none is sameas none }}{{ false is sameas false }}"
         "{{ 1 is sameas true }}", {"x": [1], "xs": [1], "ys": [1]}),
        ("{{ 'abc' is lower }}{{ 'aBc' is lower }}{{ 'ABC' is upper }}{{ 'AbC' is upper }}{{ 1 is lower }}", {}),
        ("{{ 1 is number and 2 is number }} {{ not 1 is string }} {{ (1 is string) ~ '' }}", {}),
    ],
    # Filters, one by one.
    "kFilters": [
        ("{{ xs|length }} {{ 'añb'|length }} {{ d|length }} {{ u|length }} {{ xs|count }}", {"xs": [1, 2], "d": {"a": 1}}),
        ("{{ d|tojson }}|{{ xs|tojson }}|{{ 's\"\\\n'|tojson }}|{{ none|tojson }}|{{ 1.0|tojson }}",
         {"d": {"b": [1, True], "a": "é"}, "xs": []}),
        ("{{ d|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}",
         {"d": {"b": [1, {}], "a": None}}),
        ("{{ ' \\t a b \\n'|trim }}|{{ 'xxaxx'|trim('x') }}|{{ u|trim }}|{{ 5|trim }}", {}),
        ("{{ 1|string ~ 2 }} {{ none|string }} {{ [1, 'a']|string }} {{ 1.5|string }}", {}),
        ("{{ 'AbC ÉÑ'|lower }} {{ 'AbC éñ'|upper }} {{ 'hello WORLD'|capitalize }} {{ 'hello wORLD-x (y'|title }}", {}),
        ("{{ xs|first }} {{ xs|last }} {{ 'añb'|first }} {{ 'añb'|last }} [{{ []|first }}]", {"xs": [1, 2, 3]}),
        ("{{ xs|join }} {{ xs|join(', ') }} {{ ms|join('/', attribute='n') }} {{ 'abc'|join('-') }}",
         {"xs": [1, "a", None], "ms": [{"n": "x"}, {"n": "y"}]}),
        ("{{ u|default('d') }} {{ u|d('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ 0|default(1, boolean=true) }}"
         " [{{ u|default }}] {{ none|default('d') }}", {}),
        ("{{ d|items|list }} {% for k, v in d|items %}{{ k }}{{ v }}{% endfor %} {{ u|items|list }}", {"d": {"a": 1, "b": 2}}),
        ("{{ 'ab'|list }} {{ d|list }} {{ xs|list }}", {"d": {"k": 1, "j": 2}, "xs": [1]}),
        ("{{ 'a-b-c'|replace('-', '+') }} {{ 'a-b-c'|replace('-', '', 1) }} {{ 'ab'|replace('', '.') }}", {}),
        ("{{ '42'|int + 1 }} {{ ' 7 '|int }} {{ 3.9|int }} {{ -3.9|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ true|int }}"
         " {{ '1.5'|int }} {{ ' -2.7 '|int }} {{ '1e3'|int }} {{ 'nan'|int(7) }}", {}),
        ("{{ '1.5'|float }} {{ 2|float }} {{ 'x'|float }} {{ ' 2.5 '|float }}", {}),
        ("{{ -3|abs }} {{ -2.5|abs }} {{ 4|abs }}", {}),
        ("{{ '<b>'|safe }} {{ xs|reverse|list }} {{ 'añb'|reverse }}", {"xs": [1, 2, 3]}),
        ("{{ [3, 1, 3, 2, 1]|unique|list }} {{ 'abca'|unique|list }}", {}),
        ("{{ [3, 1, 2]|sort }} {{ [1, 2]|sum }} {{ 2.5|round }} {{ ['b', 'A']|sort }} {{ [4, 9]|max }} {{ 'x'|center(5) }}"
         " {{ {'b': 1, 'a': 2}|dictsort }} {{ '%s=%d'|format('k', 3) }} {{ '%05.1f' % 2.25 }} {{ 'a&b'|e }}", {}),
        ("{% filter upper %}x{{ 'y' }}{% endfilter %} {{ {1: 'a', none: 2, 2.5: [1]} }} {{ {1: 'a'}[1.0] }}"
         " {% for k, v in {16: 'p', 8: 'q'}|dictsort %}{{ k + 1 }}{{ v }}{% endfor %}", {}),
        ("{{ ms|map(attribute='n')|list }} {{ ms|map(attribute='z', default='-')|list }} {{ xs|map('upper')|list }}"
         " {{ ys|map('int')|list }} {{ ys|map('replace', '1', 'one')|list }}",
         {"ms": [{"n": 1}, {"n": 2}], "xs": ["a", "b"], "ys": ["1", "12"]}),
        ("{{ ms|selectattr('r', 'equalto', 'u')|map(attribute='n')|list }} {{ ms|rejectattr('r', '==', 'u')|list|length }}"
         " {{ ms|selectattr('f')|map(attribute='n')|list }} {{ ms|rejectattr('f')|map(attribute='n')|list }}",
         {"ms": [{"r": "u", "n": 1, "f": True}, {"r": "a", "n": 2}, {"r": "u", "n": 3, "f": False}]}),
        ("{{ xs|select|list }} {{ xs|reject|list }} {{ xs|select('odd')|list }} {{ xs|select('gt', 1)|list }}"
         " {{ xs|reject('in', [0, 3])|list }}", {"xs": [0, 1, 2, 3]}),
        ("[{{ 'a\nb\n\nc'|indent }}] [{{ 'a\nb'|indent(2) }}] [{{ 'a\nb'|indent(2, true) }}]"
         " [{{ 'a\n\nb'|indent(2, blank=true) }}] [{{ 'a\nb'|indent('> ') }}] [{{ 'a\nb'|indent(-1) }}]", {}),
        ("{{ xs|map('string')|join|length }} {{ 'x'|upper|lower|capitalize }}", {"xs": [10, 20]}),
    ],
    # Methods of str and dict values.
    "kMethods": [
        ("[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxaxx'.strip('x') }}][{{ 'abc'.strip('ca') }}]",
         {"s": " \t a b \n"}),
        ("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}"
         " {{ ' a b c '.split(none, 1) }} {{ ' a b c '.rsplit(none, 1) }} {{ ' a  b '.split(none, 5) }}", {}),
        ("{{ 'abc'.startswith('ab') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'abc'.endswith('bc') }} {{ 'abc'.endswith('x') }}",
         {}),
        ("{{ 'AbÉ'.upper() }} {{ 'AbÉ'.lower() }} {{ 'straße'.upper() }} {{ 'ΣΑΣ'.lower() }}", {}),
        ("{{ 'a-b-a'.replace('a', 'x') }} {{ 'a-b-a'.replace('a', 'x', 1) }} {{ 'héllo'.find('l') }} {{ 'abc'.find('z') }}"
         " {{ 'aaa'.count('a') }} {{ 'aaaa'.count('aa') }} {{ 'ab'.count('') }}", {}),
        ("{{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }}",
         {"d": {"a": 1, "b": 2}}),
        ("{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %} {{ d.items()|list }}", {"d": {"a": [1], "b": None}}),
        ("[{{ 's'.nosuchmethod }}] {{ 's'.nosuchmethod is defined }}", {}),
    ],
    # Printing values as Python's str() and repr() do.
    "kPrinting": [
        ("{{ [1, 1.5, 's', none, true, [2], {'k': 'v'}] }}", {}),
        ("{{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'nl\\n\\t', 'back\\\\'] }}", {}),
        ("{{ ['\\x00', '\\x7f', '\\u00a0', '\\u00e9', '\\u200b', '\\u3000', '\\U0001F600'] }}", {}),
        ("{{ {'a': none, 'b': [1, (2, 3)]} }} {{ (1, (2,), ()) }}", {}),
        ("{{ xs }} {{ d }} {{ x }} {{ b }} {{ n }}", {"xs": [1, "a"], "d": {"k": [None]}, "x": 2.0, "b": False, "n": None}),
        ("[{{ u }}] [{{ [u] }}]", {}),
        ("{{ 1e100 }} {{ 1.5e-7 }} {{ 123456789.123 }} {{ 100.0 }} {{ 3.0e15 }} {{ 1/0.0001 }}", {}),
    ],
}

# ------------------------------------------------------------------------------------------------
# Cases Jinja2 rejects too: (template, context, [substrings s0's message must contain]).
# Every s0 message also names the template and a line (the C++ test checks both).

ERRORS = [
    # Malformed templates (rejected when parsed).
    ("a {{ x", {}, ["line 1", "unterminated '{{'"]),
    ("a\n{% if x", {}, ["line 2", "unterminated '{%'"]),
    ("{# never closed", {}, ["unterminated comment"]),
    ("{{ 'abc }}", {}, ["unterminated string literal"]),
    ("{% if x %}a", {}, ["missing {% elif/else/endif %}"]),
    ("{% for x in xs %}a", {}, ["missing {% else/endfor %}"]),
    ("{% macro m() %}a", {}, ["missing {% endmacro %}"]),
    ("{% set x %}a", {}, ["missing {% endset %}"]),
    ("a\n\n{% endif %}", {}, ["line 3", "unsupported Jinja construct: {% endif %}"]),
    ("{% if x %}{% endfor %}", {}, ["unsupported Jinja construct: {% endfor %}"]),
    ("{{ }}", {}, ["unexpected '}}'"]),
    ("{{ 1 + }}", {}, ["unexpected '}}'"]),
    ("{{ (1 }}", {}, ["unterminated '{{'"]),  # `}}` inside brackets does not end the tag
    ("{{ [1, 2 }}", {}, ["unterminated '{{'"]),
    ("{{ (1 ] }}", {}, ["expected ')', got ']'"]),
    ("{{ {'a' 1} }}", {}, ["expected ':', got '1'"]),
    ("{{ x y }}", {}, ["expected '}}', got 'y'"]),
    ("{{ x ; }}", {}, ["unexpected character ';'"]),
    ("{{ x $ }}", {}, ["unexpected character '$'"]),
    ("{% if %}x{% endif %}", {}, ["unexpected end of tag"]),
    ("{% if x %}{% else %}{% else %}{% endif %}", {}, ["unsupported Jinja construct: {% else %}"]),
    ("{% for in xs %}{% endfor %}", {}, ["expected 'in', got 'xs'"]),
    ("{% for x xs %}{% endfor %}", {}, ["expected 'in', got 'xs'"]),
    ("{% for 1 in xs %}{% endfor %}", {}, ["expected a name, got '1'"]),
    ("{% set = 1 %}", {}, ["expected a name, got '='"]),
    ("{% macro m(1) %}{% endmacro %}", {}, ["expected a name, got '1'"]),
    ("{% if x %}{% endif extra %}", {}, ["expected end of tag, got 'extra'"]),
    ("{{ x.1.5 }}", {}, ["expected a name"]),
    ("{{ x[] }}", {}, ["empty subscript"]),
    ("{{ x[1 2] }}", {}, ["bad subscript"]),
    ("{{ f(a=1, 2) }}", {}, ["positional argument after keyword argument"]),
    ("{{ x is }}", {}, ["expected a test name, got '}}'"]),
    ("{{ x| }}", {}, ["expected a name, got '}}'"]),
    ("{% break %}", {}, ["'break' outside a for loop"]),
    ("{% for x in xs %}{% endfor %}{% continue %}", {}, ["'continue' outside a for loop"]),
    ("{% nosuchtag %}", {}, ["unsupported Jinja construct: {% nosuchtag %}"]),
    ("{% include 'other.jinja' %}", {}, ["unsupported Jinja construct: {% include %}"]),
    ("{{ x|nosuchfilter }}", {}, ["unsupported Jinja filter 'nosuchfilter'"]),
    ("{{ x is nosuchtest }}", {}, ["unsupported Jinja test 'nosuchtest'"]),
    ("line 1\n{{ 'two\nlines' }}\n{{ x ; }}", {}, ["line 4", "unexpected character ';'"]),
    (r"{{ '\U00110000' }}", {}, ["illegal Unicode character in string literal"]),
    # Runtime errors (raised when rendered).
    ("{{ raise_exception('Bad role: ' ~ r) }}", {"r": "moderator"}, ["template raised an error: Bad role: moderator"]),
    ("a\n{{ x.y }}", {}, ["line 2", "'x' is undefined (has no attribute 'y')"]),
    ("{{ x['y'] }}", {}, ["'x' is undefined (subscripted)"]),
    ("{{ x[1:] }}", {}, ["'x' is undefined (sliced)"]),
    ("{{ x + 1 }}", {}, ["'x' is undefined (used with '+')"]),
    ("{{ 1 - d.missing }}", {"d": {}}, ["'missing' is undefined (used with '-')"]),
    ("{{ u|int }}", {}, ["'u' is undefined (filter 'int')"]),
    ("{{ nosuchfunction() }}", {}, ["'nosuchfunction' is undefined (not a supported function)"]),
    ("{{ x() }}", {"x": 1}, ["'int' object is not callable"]),
    ("{{ 'a' + 1 }}", {}, ["unsupported operand type(s) for +: 'str' and 'int'"]),
    ("{{ [1] - [1] }}", {}, ["unsupported operand type(s) for -: 'list' and 'list'"]),
    ("{{ none * 2 }}", {}, ["unsupported operand type(s) for *: 'NoneType' and 'int'"]),
    ("{{ -'a' }}", {}, ["bad operand type for unary -: 'str'"]),
    ("{{ 1 / 0 }}", {}, ["division by zero"]),
    ("{{ 1 // 0 }}", {}, ["integer division or modulo by zero"]),
    ("{{ 1.5 % 0 }}", {}, ["integer division or modulo by zero"]),
    ("{{ 'a' < 1 }}", {}, ["'<' not supported between instances of 'str' and 'int'"]),
    ("{{ 1 in 'abc' }}", {}, ["'in <string>' requires string as left operand"]),
    ("{{ 1 in 2 }}", {}, ["argument of type 'int' is not iterable"]),
    ("{{ [1] in {'a': 1} }}", {}, ["unhashable type: 'list'"]),
    ("{{ {[1]: 'a'} }}", {}, ["unhashable type: 'list'"]),
    ("{% for x in 5 %}{% endfor %}", {}, ["'int' object is not iterable"]),
    ("{% for a, b in [[1, 2, 3]] %}{% endfor %}", {}, ["cannot unpack 3 values into 2 loop variables"]),
    ("{{ xs[::0] }}", {"xs": [1]}, ["slice step cannot be zero"]),
    ("{{ xs['a':] }}", {"xs": [1]}, ["slice indices must be integers"]),
    ("{{ 5|length }}", {}, ["object of type 'int' has no len()"]),
    ("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", {}, ["macro 'm' takes 1 arguments, got 2"]),
    ("{% macro m(a) %}{% endmacro %}{{ m(b=1) }}", {}, ["macro 'm' has no parameter 'b'"]),
    ("{% set x = 1 %}{% set x.a = 2 %}", {}, ["cannot assign attribute 'a' on 'x'"]),
    ("{{ u|tojson }}", {}, ["tojson: value is undefined"]),
    ("{{ range(1, 5, 0)|list }}", {}, ["range() step must not be zero"]),
    ("{{ range(100001)|length }}", {}, ["range() too large"]),
    ("{{ range('a') }}", {}, ["range() arguments must be integers"]),
    ("{{ 0 ** -1 }}", {}, ["0.0 cannot be raised to a negative power"]),
    ("{{ 0.0 ** -2.5 }}", {}, ["0.0 cannot be raised to a negative power"]),
    ("{{ 'ab' * 1000000000000 }}", {}, ["'*': result too large"]),
    ("{{ [1, 2] * 1000000000000 }}", {}, ["'*': result too large"]),
    ("{{ 'a\nb'|indent(99999999999999) }}", {}, ["indent: width 99999999999999 is too large"]),
    ("{{ {'a': 1}|tojson(indent=1000000000000) }}", {}, ["tojson: indent 1000000000000 is too large"]),
    ("{{ 'a b'.split('') }}", {}, ["empty separator"]),
    ("{{ 'abc'.replace(1, 2) }}", {}, ["replace() argument 1 must be a string"]),
    ("{{ 3 is divisibleby 0 }}", {}, ["divisibleby 0"]),
    ("{{ 's' is odd }}", {}, ["test 'odd' needs a number"]),
    ("{{ d|items|list }}", {"d": [1]}, ["items filter: can only get item pairs from a mapping"]),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}, ["macro 'f': recursion deeper than 64 calls"]),
]

# Cases Python Jinja2 renders but s0 deliberately refuses: (template, context, [substrings]).
REFUSED = [
    ("{% raw %}{{ x }}{% endraw %}", {}, ["unsupported Jinja construct: {% raw %}"]),
    ("{% macro m() %}[{{ caller() }}]{% endmacro %}{% call m() %}x{% endcall %}", {},
     ["unsupported Jinja construct: {% call %}"]),
    ("{% with a = 1 %}{{ a }}{% endwith %}", {}, ["unsupported Jinja construct: {% with %}"]),
    ("{% for x in xs recursive %}{{ x }}{% endfor %}", {"xs": [1]}, ["unsupported Jinja construct: recursive for loops"]),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}, ["unsupported Jinja construct: this form of {% set %}"]),
    ("{% macro m() %}{{ varargs }}{% endmacro %}{{ m(*[1]) }}", {}, ["*args/**kwargs in a call"]),
    ("{{ x|wordwrap }}", {"x": "a"}, ["unsupported Jinja filter 'wordwrap'"]),
    ("{{ x is escaped }}", {"x": "a"}, ["unsupported Jinja test 'escaped'"]),
    ("{% for x in [1, 2] %}{{ loop.cycle('a', 'b') }}{% endfor %}", {}, ["'cycle' is undefined (not a supported function)"]),
    ("{{ 99999999999999999999 }}", {}, ["integer literal out of range"]),
    ("{{ [1].99999999999999999999 }}", {}, ["integer literal out of range"]),
    # s0's integers are 64-bit: where Python's would grow, s0 refuses instead of wrapping around.
    ("{{ 9223372036854775807 + 1 }}", {}, ["integer overflow in '+'"]),
    ("{{ -9223372036854775807 - 2 }}", {}, ["integer overflow in '-'"]),
    ("{{ 4294967296 * 4294967296 }}", {}, ["integer overflow in '*'"]),
    ("{{ 2 ** 63 }}", {}, ["integer overflow in '**'"]),
    ("{{ (-9223372036854775807 - 1) // -1 }}", {}, ["integer overflow in '//'"]),
    ("{{ -(-9223372036854775807 - 1) }}", {}, ["integer overflow in '-'"]),
    ("{{ (-9223372036854775807 - 1)|abs }}", {}, ["integer overflow (abs)"]),
    ("{{ [1] >= [0] }}", {}, ["'>=' not supported between instances of 'list' and 'list'"]),
    ("{{ 5[1:] }}", {}, ["'int' object is not subscriptable"]),
]

# Nesting beyond s0's limit (256 levels: blocks, nested expressions, chains such as a + b + c),
# which s0 refuses. Too long for the tables: JinjaErrors.NestingIsBounded builds the same
# templates; this list only records (and --check verifies) what Python Jinja2 does with them.
NESTING = [
    # (template, Jinja2 raises)
    ("{{ " + "(" * 300 + "1" + ")" * 300 + " }}", True),
    ("{{ " + "[" * 300 + "]" * 300 + " }}", True),
    ("{% if true %}" * 300 + "x" + "{% endif %}" * 300, True),
    ("{{ " + "+".join(["1"] * 1000) + " }}", True),
    ("{{ " + "+".join(["1"] * 300) + " }}", False),
    ("{{ " + "-" * 300 + "1 }}", False),
    ("{{ 1" + "|string" * 300 + " }}", False),
    ("{{ " + " if 1 else ".join(["1"] * 300) + " }}", False),
]

# ------------------------------------------------------------------------------------------------


def cpp_str(s):
    """A C++ string literal with the bytes of `s` (UTF-8); control characters escaped."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\%03o" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def render(src, ctx):
    return make_env().from_string(src).render(**ctx)


def renders_table(name, cases):
    lines = [f"const RenderCase {name}[] = {{"]
    for src, ctx in cases:
        out = render(src, ctx)
        one = f"    {{{cpp_str(src)}, {cpp_str(json.dumps(ctx, ensure_ascii=False))}, {cpp_str(out)}}},"
        if len(one) <= 100 and "\n" not in one:
            lines.append(one)
        else:
            lines.append(f"    {{{cpp_str(src)},\n     {cpp_str(json.dumps(ctx, ensure_ascii=False))},\n"
                         f"     {cpp_str(out)}}},")
    lines.append("};")
    return "\n".join(lines)


def errors_table(name, cases, jinja_raises):
    lines = [f"const ErrorCase {name}[] = {{"]
    for src, ctx, wants in cases:
        try:
            got = render(src, ctx)
            if jinja_raises:
                sys.exit(f"Jinja2 renders {src!r} (expected an error): {got!r}")
            note = "Jinja2 renders " + json.dumps(got, ensure_ascii=False)
        except Exception as e:  # noqa: BLE001 - any Jinja2/Python error counts
            if not jinja_raises:
                sys.exit(f"Jinja2 raises on {src!r} (expected it to render): {type(e).__name__}: {e}")
            note = f"Jinja2: {type(e).__name__}: {e}".replace("\n", " ")
        assert len(wants) <= 2
        w = [cpp_str(x) for x in wants] + ["nullptr"] * (2 - len(wants))
        note = f"    // {note}"
        lines.append(note if len(note) <= 100 else note[:96].rstrip() + " ...")
        lines.append(f"    {{{cpp_str(src)}, {cpp_str(json.dumps(ctx, ensure_ascii=False))}, {w[0]}, {w[1]}}},")
    lines.append("};")
    return "\n".join(lines)


def check_nesting():
    for src, raises in NESTING:
        try:
            render(src, {})
            ok = not raises
        except Exception:  # noqa: BLE001
            ok = raises
        if not ok:
            sys.exit(f"Jinja2 {'renders' if raises else 'raises on'} {src[:40]!r}... (NESTING says otherwise)")


def tables():
    parts = [f"// Generated by tools/make_jinja_tests.py from Python Jinja2 {jinja2.__version__}; do not edit."]
    for name, cases in RENDERS.items():
        parts.append(renders_table(name, cases))
    parts.append(errors_table("kErrors", ERRORS, True))
    parts.append(errors_table("kRefused", REFUSED, False))
    return "\n\n".join(parts) + "\n"


def main():
    check_nesting()
    text = open(TEST, encoding="utf-8").read()
    b, e = "// @@CASES_BEGIN@@\n", "// @@CASES_END@@\n"
    i, j = text.index(b) + len(b), text.index(e)
    new = text[:i] + tables() + text[j:]
    if "--check" in sys.argv[1:]:
        if new != text:
            sys.exit(f"{TEST}: the case tables differ from Python Jinja2's results; rerun {sys.argv[0]}")
        print("tables match Python Jinja2", jinja2.__version__)
        return
    open(TEST, "w", encoding="utf-8").write(new)


if __name__ == "__main__":
    main()
