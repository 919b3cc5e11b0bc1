"""The grammar of the built-in task family (shared by taskgen.py and corpus.py).

Every task type has: parameters, a docstring template, function-name templates, an
input generator (random inputs plus edge cases), and four solution bodies:

  A_ok   style A (explicit accumulator: the body starts with `    result = `), correct
  A_bad  style A with a subtle bug
  B_ok   style B (a one-liner: the body starts with `    return `), correct
  B_bad  style B with a subtle bug (off-by-one, < vs <=, wrong default, missing edge case)

Templates use string.Template ($name); string parameters are substituted as Python
literals (repr), so the docstring and the code show the same spelling.
Tooling code, standard library only.
"""
import random
import string
from string import Template

LETTERS = string.ascii_lowercase

# Per task type: P(style A) in the pretraining corpus. Types with P(A) > 0.5 are
# "A-majority" (imitating the corpus majority gives a correct solution), the others
# "B-majority" (the majority style is the buggy one-liner). See README.md.
P_A = {
    "sum_div": 0.30,
    "count_gt": 0.70,
    "count_long_words": 0.30,
    "replace_char": 0.65,
    "clamp": 0.25,
    "every_kth": 0.70,
    "filter_range": 0.35,
    "count_char_ci": 0.75,
    "first_index_gt": 0.30,
    "max_or_default": 0.25,
    "scale_shift": 0.70,
    "caesar": 0.30,
    "words_starting": 0.65,
    "pairwise_diff": 0.35,
    "digit_sum_times": 0.70,
    "all_at_least": 0.30,
    "pad_left": 0.25,
    "last_k_sum": 0.35,
    "join_sep": 0.75,
    "count_pairs_sum": 0.30,
    "sum_multiples_upto": 0.35,
    "last_index": 0.70,
}
# Within-style variation: P(correct | style A) and P(correct | style B).
P_OK_A = 0.90
P_OK_B = 0.10


def rand_list(rng, lo=-9, hi=20, nmin=0, nmax=8):
    return [rng.randint(lo, hi) for _ in range(rng.randint(nmin, nmax))]


def rand_words(rng, nmin=0, nmax=6, lmin=1, lmax=10, alphabet=LETTERS):
    return " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(lmin, lmax)))
                    for _ in range(rng.randint(nmin, nmax)))


def rand_str(rng, alphabet, nmin=0, nmax=10):
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(nmin, nmax)))


class TaskType:
    def __init__(self, key, args, names, doc, params, inputs, edges, A_ok, A_bad, B_ok, B_bad):
        self.key = key
        self.args = args            # e.g. "xs"
        self.names = names          # list of name templates
        self.doc = doc              # docstring template
        self.params = params        # rng -> dict of raw parameter values
        self.inputs = inputs        # (rng, p) -> tuple of args (random)
        self.edges = edges          # (rng, p) -> list of arg tuples (edge cases)
        self.bodies = {"A_ok": A_ok, "A_bad": A_bad, "B_ok": B_ok, "B_bad": B_bad}

    @staticmethod
    def subst(p):
        return {k: (repr(v) if isinstance(v, str) else str(v)) for k, v in p.items()}

    def name(self, p, i):
        return Template(self.names[i % len(self.names)]).substitute(self.subst(p))

    def docstring(self, p):
        return Template(self.doc).substitute(self.subst(p))

    def body(self, variant, p):
        src = Template(self.bodies[variant]).substitute(self.subst(p)).strip("\n")
        return "\n".join("    " + l if l else l for l in src.split("\n")) + "\n"

    def param_key(self, p):
        return tuple(sorted(p.items()))


def T(key, args, names, doc, params, inputs, edges, A_ok, A_bad, B_ok, B_bad):
    return TaskType(key, args, names, doc, params, inputs, edges, A_ok, A_bad, B_ok, B_bad)


def _lo_hi(r):
    lo = r.randint(-5, 8)
    return {"lo": lo, "hi": lo + r.randint(2, 9)}


TYPES = [
    T("sum_div", "xs", ["sum_div_by_${k}", "sum_multiples_of_${k}", "total_divisible_by_${k}"],
      "Return the sum of the elements of xs that are divisible by $k.",
      lambda r: {"k": r.randint(2, 11)},
      lambda r, p: (rand_list(r, -30, 30),),
      lambda r, p: [([],), ([-p["k"], p["k"] * 2, 1, -2 * p["k"]],)],
      """
result = 0
for x in xs:
    if x % $k == 0:
        result += x
return result
""", """
result = 0
for x in xs:
    if x % $k == 0 and x > 0:
        result += x
return result
""", "return sum(x for x in xs if x % $k == 0)",
      "return sum(x for x in xs if x % $k == 0 and x > 0)"),

    T("count_gt", "xs", ["count_greater_than_${t0}", "num_above_${t0}", "how_many_over_${t0}"],
      "Return how many elements of xs are greater than $t.",
      lambda r: {"t": r.randint(-5, 15)},
      lambda r, p: (rand_list(r),),
      lambda r, p: [([],), ([p["t"], p["t"] + 1, p["t"] - 1, p["t"]],)],
      """
result = 0
for x in xs:
    if x > $t:
        result += 1
return result
""", """
result = 0
for x in xs:
    if x >= $t:
        result += 1
return result
""", "return sum(1 for x in xs if x > $t)", "return sum(1 for x in xs if x >= $t)"),

    T("count_long_words", "s", ["count_words_longer_than_${n}", "long_words_over_${n}", "num_words_above_${n}"],
      "Return how many words of s (separated by spaces) have more than $n characters.",
      lambda r: {"n": r.randint(1, 10)},
      lambda r, p: (rand_words(r, lmax=12),),
      lambda r, p: [("",), (" ".join(["a" * p["n"], "b" * (p["n"] + 1), "c"]),)],
      """
result = 0
for w in s.split():
    if len(w) > $n:
        result += 1
return result
""", """
result = 0
for w in s.split():
    if len(w) >= $n:
        result += 1
return result
""", "return len([w for w in s.split() if len(w) > $n])",
      "return len([w for w in s.split() if len(w) >= $n])"),

    T("replace_char", "s", ["replace_${c1}_with_${d1}", "swap_${c1}_to_${d1}", "substitute_${c1}_by_${d1}"],
      "Return s with every $c replaced by $d.",
      lambda r: dict(zip(("c", "d"), r.sample(LETTERS, 2))),
      lambda r, p: (rand_str(r, p["c"] * 3 + p["d"] + "xyzab "),),
      lambda r, p: [("",), (p["c"] + "o" + p["c"] + p["c"] + "k",)],
      """
result = ''
for ch in s:
    if ch == $c:
        result += $d
    else:
        result += ch
return result
""", """
result = ''
for ch in s:
    if ch == $c and $d not in result:
        result += $d
    else:
        result += ch
return result
""", "return s.replace($c, $d)", "return s.replace($c, $d, 1)"),

    T("clamp", "xs", ["clamp_${lo0}_${hi0}", "clip_into_${lo0}_${hi0}", "bound_values_${lo0}_${hi0}"],
      "Return a new list with every element of xs clamped into the range [$lo, $hi].",
      _lo_hi,
      lambda r, p: (rand_list(r, -15, 25),),
      lambda r, p: [([],), ([p["lo"] - 3, p["hi"] + 4, p["lo"] + 1],)],
      """
result = []
for x in xs:
    if x < $lo:
        result.append($lo)
    elif x > $hi:
        result.append($hi)
    else:
        result.append(x)
return result
""", """
result = []
for x in xs:
    if x < $lo:
        result.append($lo)
    else:
        result.append(x)
return result
""", "return [min(max(x, $lo), $hi) for x in xs]", "return [max(x, $lo) for x in xs]"),

    T("every_kth", "xs", ["every_${k}_from_${s}", "take_every_${k}_at_${s}", "stride_${k}_offset_${s}"],
      "Return every $k-th element of xs, starting at index $s.",
      lambda r: {"k": r.randint(2, 5), "s": r.randint(0, 3)},
      lambda r, p: (rand_list(r, nmax=13),),
      lambda r, p: [([],), (list(range(10, 11 + p["s"] + 2 * p["k"])),)],
      """
result = []
i = $s
while i < len(xs):
    result.append(xs[i])
    i += $k
return result
""", """
result = []
i = $s
while i < len(xs) - 1:
    result.append(xs[i])
    i += $k
return result
""", "return xs[$s::$k]", "return [xs[i] for i in range($s, len(xs) - 1, $k)]"),

    T("filter_range", "xs", ["keep_between_${lo0}_${hi0}", "filter_range_${lo0}_${hi0}", "within_${lo0}_and_${hi0}"],
      "Return the elements of xs that are between $lo and $hi (both inclusive), in order.",
      _lo_hi,
      lambda r, p: (rand_list(r, -10, 20),),
      lambda r, p: [([],), ([p["hi"], p["lo"] - 1, p["lo"], p["hi"] + 1],)],
      """
result = []
for x in xs:
    if $lo <= x <= $hi:
        result.append(x)
return result
""", """
result = []
for x in xs:
    if $lo < x < $hi:
        result.append(x)
return result
""", "return [x for x in xs if $lo <= x <= $hi]", "return [x for x in xs if $lo < x < $hi]"),

    T("count_char_ci", "s", ["count_letter_${c1}", "occurrences_of_${c1}", "how_many_${c1}"],
      "Return how many times the letter $c occurs in s, ignoring case.",
      lambda r: {"c": r.choice(LETTERS)},
      lambda r, p: (rand_str(r, p["c"] + p["c"].upper() + "abXY e"),),
      lambda r, p: [("",), (p["c"].upper() + "x" + p["c"],)],
      """
result = 0
for ch in s.lower():
    if ch == $c:
        result += 1
return result
""", """
result = 0
for ch in s:
    if ch == $c:
        result += 1
return result
""", "return s.lower().count($c)", "return s.count($c)"),

    T("first_index_gt", "xs", ["first_above_${t0}", "index_first_over_${t0}", "find_first_greater_${t0}"],
      "Return the index of the first element of xs that is greater than $t, or -1 if there is none.",
      lambda r: {"t": r.randint(-5, 15)},
      lambda r, p: (rand_list(r),),
      lambda r, p: [([],), ([p["t"], p["t"] - 2],), ([p["t"] - 1, p["t"] + 3, p["t"] + 5],)],
      """
result = -1
for i in range(len(xs)):
    if xs[i] > $t:
        result = i
        break
return result
""", """
result = 0
for i in range(len(xs)):
    if xs[i] > $t:
        result = i
        break
return result
""", "return next((i for i in range(len(xs)) if xs[i] > $t), -1)",
      "return next((i for i in range(len(xs)) if xs[i] > $t), 0)"),

    T("max_or_default", "xs", ["max_or_${d0}", "largest_or_${d0}", "biggest_else_${d0}"],
      "Return the largest element of xs, or $d if xs is empty.",
      lambda r: {"d": r.randint(-10, 10)},
      lambda r, p: (rand_list(r, -20, 20),),
      lambda r, p: [([],), ([p["d"] - 5, p["d"] - 2],), ([p["d"] + 1, p["d"] - 1],)],
      """
result = $d
for i in range(len(xs)):
    if i == 0 or xs[i] > result:
        result = xs[i]
return result
""", """
result = $d
for x in xs:
    if x > result:
        result = x
return result
""", "return max(xs) if xs else $d", "return max(xs + [$d])"),

    T("scale_shift", "xs", ["times_${a}_plus_${b}", "scale_${a}_shift_${b}", "affine_${a}_${b}"],
      "Return a new list in which every element of xs is multiplied by $a and then increased by $b.",
      lambda r: {"a": r.randint(2, 9), "b": r.randint(1, 9)},
      lambda r, p: (rand_list(r, -10, 10),),
      lambda r, p: [([],), ([1, 0],)],
      """
result = []
for x in xs:
    result.append(x * $a + $b)
return result
""", """
result = []
for x in xs:
    result.append((x + $b) * $a)
return result
""", "return [x * $a + $b for x in xs]", "return [(x + $b) * $a for x in xs]"),

    T("caesar", "s", ["shift_letters_${k}", "caesar_${k}", "rotate_by_${k}"],
      "Shift every lowercase letter of s forward by $k places in the alphabet, wrapping around "
      "from 'z' to 'a'; other characters stay unchanged.",
      lambda r: {"k": r.randint(1, 25)},
      lambda r, p: (rand_str(r, LETTERS + " !", 0, 9),),
      lambda r, p: [("",), ("xyz a!",)],
      """
result = ''
for ch in s:
    if 'a' <= ch <= 'z':
        result += chr((ord(ch) - 97 + $k) % 26 + 97)
    else:
        result += ch
return result
""", """
result = ''
for ch in s:
    if 'a' <= ch <= 'z':
        result += chr(ord(ch) + $k)
    else:
        result += ch
return result
""", "return ''.join(chr((ord(ch) - 97 + $k) % 26 + 97) if 'a' <= ch <= 'z' else ch for ch in s)",
      "return ''.join(chr(ord(ch) + $k) if 'a' <= ch <= 'z' else ch for ch in s)"),

    T("words_starting", "s", ["words_starting_with_${c1}", "words_beginning_${c1}", "select_words_${c1}"],
      "Return the list of words of s (separated by spaces) that start with the letter $c.",
      lambda r: {"c": r.choice(LETTERS)},
      lambda r, p: (rand_words(r, lmax=6, alphabet=p["c"] * 2 + "aeiostn"),),
      lambda r, p: [("",), ("o" + p["c"] + " " + p["c"] + "x",)],
      """
result = []
for w in s.split():
    if w[0] == $c:
        result.append(w)
return result
""", """
result = []
for w in s.split():
    if $c in w:
        result.append(w)
return result
""", "return [w for w in s.split() if w.startswith($c)]", "return [w for w in s.split() if $c in w]"),

    T("pairwise_diff", "xs", ["diffs_at_distance_${k}", "gaps_${k}_apart", "lag_${k}_differences"],
      "Return the list of differences xs[i + $k] - xs[i] for every index i where xs[i + $k] exists.",
      lambda r: {"k": r.randint(1, 10)},
      lambda r, p: (rand_list(r, -10, 10, 0, 14),),
      lambda r, p: [([],), (list(range(0, 3 * (p["k"] + 2), 3)),)],
      """
result = []
for i in range(len(xs) - $k):
    result.append(xs[i + $k] - xs[i])
return result
""", """
result = []
for i in range(len(xs) - $k - 1):
    result.append(xs[i + $k] - xs[i])
return result
""", "return [xs[i + $k] - xs[i] for i in range(len(xs) - $k)]",
      "return [xs[i + $k] - xs[i] for i in range(len(xs) - $k - 1)]"),

    T("digit_sum_times", "n", ["digit_sum_times_${k}", "digits_total_x${k}", "scaled_digit_sum_${k}"],
      "Return the sum of the decimal digits of n multiplied by $k (the sign of n is ignored).",
      lambda r: {"k": r.randint(2, 12)},
      lambda r, p: (r.randint(-9999, 99999),),
      lambda r, p: [(0,), (-473,)],
      """
result = 0
for ch in str(abs(n)):
    result += int(ch)
return result * $k
""", """
result = 0
for ch in str(n):
    result += int(ch)
return result * $k
""", "return sum(int(ch) for ch in str(abs(n))) * $k", "return sum(int(ch) for ch in str(n)) * $k"),

    T("all_at_least", "xs", ["all_at_least_${t0}", "none_below_${t0}", "every_item_ge_${t0}"],
      "Return True if every element of xs is at least $t, and False otherwise (True for an empty list).",
      lambda r: {"t": r.randint(-5, 15)},
      lambda r, p: (rand_list(r, p["t"] - 3, p["t"] + 12, 0, 6),),
      lambda r, p: [([],), ([p["t"] + 2, p["t"]],), ([p["t"] - 1],)],
      """
result = True
for x in xs:
    if x < $t:
        result = False
return result
""", """
result = True
for x in xs:
    if x <= $t:
        result = False
return result
""", "return all(x >= $t for x in xs)", "return min(xs) >= $t"),

    T("pad_left", "s", ["pad_${cname}_to_${n}", "left_pad_${cname}_${n}", "fill_left_${cname}_${n}"],
      "Pad s on the left with $c until it is $n characters long; a string that is already long "
      "enough is returned unchanged.",
      lambda r: dict(zip(("c", "cname", "n"), r.choice(list(zip("*0.-#_", ("star", "zero", "dot", "dash", "hash", "underscore")))) + (r.randint(3, 9),))),
      lambda r, p: (rand_str(r, "abcxyz1", 0, 11),),
      lambda r, p: [("",), ("q" * (p["n"] + 2),), ("ab",)],
      """
result = s
while len(result) < $n:
    result = $c + result
return result
""", """
result = s
while len(result) <= $n:
    result = $c + result
return result
""", "return $c * ($n - len(s)) + s", "return ($c * $n + s)[-$n:]"),

    T("last_k_sum", "xs", ["sum_last_${k}", "tail_sum_${k}", "total_of_last_${k}"],
      "Return the sum of the last $k elements of xs (of all elements if xs has fewer than $k).",
      lambda r: {"k": r.randint(3, 12)},
      lambda r, p: (rand_list(r, -9, 20, 0, 14),),
      lambda r, p: [([],), (list(range(3, 3 + p["k"] - 1)),)],
      """
result = 0
for i in range(max(0, len(xs) - $k), len(xs)):
    result += xs[i]
return result
""", """
result = 0
for i in range(len(xs) - $k, len(xs)):
    result += xs[i]
return result
""", "return sum(xs[-$k:])", "return sum(xs[len(xs) - $k:])"),

    T("join_sep", "xs", ["join_with_${sname}", "to_string_${sname}", "glue_${sname}"],
      "Return the elements of xs converted to strings and joined with $sep.",
      lambda r: r.choice([{"sep": ", ", "sname": "comma"}, {"sep": "-", "sname": "dash"},
                          {"sep": "+", "sname": "plus"}, {"sep": ";", "sname": "semicolon"},
                          {"sep": " | ", "sname": "bar"}, {"sep": "/", "sname": "slash"},
                          {"sep": ":", "sname": "colon"}, {"sep": ".", "sname": "dot"},
                          {"sep": "_", "sname": "underscore"}, {"sep": " ", "sname": "space"},
                          {"sep": "--", "sname": "double_dash"}, {"sep": "; ", "sname": "semi_space"}]),
      lambda r, p: (rand_list(r, -5, 30, 0, 6),),
      lambda r, p: [([],), ([7, 8],)],
      """
result = ''
for i in range(len(xs)):
    if i > 0:
        result += $sep
    result += str(xs[i])
return result
""", """
result = ''
for x in xs:
    result += str(x) + $sep
return result
""", "return $sep.join(str(x) for x in xs)", "return ''.join(str(x) + $sep for x in xs)"),

    T("count_pairs_sum", "xs", ["pairs_summing_to_${t0}", "count_pairs_${t0}", "two_sum_count_${t0}"],
      "Return the number of index pairs (i, j) with i < j such that xs[i] + xs[j] == $t.",
      lambda r: {"t": 2 * r.randint(-5, 10)},
      lambda r, p: (rand_list(r, p["t"] // 2 - 6, p["t"] // 2 + 6, 0, 7),),
      lambda r, p: [([],), ([p["t"] // 2, 1, p["t"] - 1],)],
      """
result = 0
for i in range(len(xs)):
    for j in range(i + 1, len(xs)):
        if xs[i] + xs[j] == $t:
            result += 1
return result
""", """
result = 0
for i in range(len(xs)):
    for j in range(i, len(xs)):
        if xs[i] + xs[j] == $t:
            result += 1
return result
""", "return sum(1 for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[i] + xs[j] == $t)",
      "return sum(1 for i in range(len(xs)) for j in range(i, len(xs)) if xs[i] + xs[j] == $t)"),

    T("sum_multiples_upto", "n", ["sum_multiples_${k}_upto_n", "total_of_multiples_${k}", "add_multiples_of_${k}"],
      "Return the sum of all integers from 1 to n (inclusive) that are divisible by $k.",
      lambda r: {"k": r.randint(2, 12)},
      lambda r, p: (r.randint(0, 60),),
      lambda r, p: [(0,), (p["k"] * 3,)],
      """
result = 0
for i in range(1, n + 1):
    if i % $k == 0:
        result += i
return result
""", """
result = 0
for i in range(1, n):
    if i % $k == 0:
        result += i
return result
""", "return sum(range($k, n + 1, $k))", "return sum(range($k, n, $k))"),

    T("last_index", "xs", ["last_index_of_${v0}", "rfind_${v0}", "last_position_of_${v0}"],
      "Return the index of the last occurrence of $v in xs, or -1 if $v does not occur.",
      lambda r: {"v": r.randint(-3, 12)},
      lambda r, p: (rand_list(r, p["v"] - 3, p["v"] + 3, 0, 8),),
      lambda r, p: [([],), ([p["v"], 0, p["v"], 1],)],
      """
result = -1
for i in range(len(xs)):
    if xs[i] == $v:
        result = i
return result
""", """
result = -1
for i in range(len(xs)):
    if xs[i] == $v:
        result = i
        break
return result
""", "return max((i for i in range(len(xs)) if xs[i] == $v), default=-1)",
      "return xs.index($v) if $v in xs else -1"),
]

TYPE_BY_KEY = {t.key: t for t in TYPES}
assert set(TYPE_BY_KEY) == set(P_A), sorted(set(TYPE_BY_KEY) ^ set(P_A))


def name_params(p):
    """Extra template fields for function names: c1 (bare letter), lo0/hi0/t0/v0/d0 (signs spelled)."""
    q = dict(p)
    for k, v in p.items():
        if isinstance(v, str) and len(v) == 1 and v.isalpha():
            q[k + "1"] = v
        if isinstance(v, int):
            q[k + "0"] = ("m" + str(-v)) if v < 0 else str(v)
    return q


def function_name(tt, p, i):
    q = name_params(p)
    return Template(tt.names[i % len(tt.names)]).substitute(
        {k: (v if isinstance(v, str) else str(v)) for k, v in q.items()})


_FN_CACHE = {}


def compile_body(args, body):
    """Compile `def f(args):` + body into a callable (cached)."""
    key = (args, body)
    f = _FN_CACHE.get(key)
    if f is None:
        ns = {}
        exec("def f(" + args + "):\n" + body, ns)
        f = ns["f"]
        if len(_FN_CACHE) > 200000:
            _FN_CACHE.clear()
        _FN_CACHE[key] = f
    return f


def run(f, a):
    try:
        return ("ok", f(*[list(x) if isinstance(x, list) else x for x in a]))
    except Exception as e:  # a buggy body may crash: that is a failure, not an error here
        return ("exc", type(e).__name__)


def make_problem(tt, p, name_idx, rng, n_tests=5):
    """Build one HumanEval-style problem. Tests: the edge cases then random inputs, chosen so
    that both buggy variants fail at least one assert and both correct variants pass all."""
    name = function_name(tt, p, name_idx)
    bodies = {v: tt.body(v, p) for v in tt.bodies}
    fns = {v: compile_body(tt.args, b) for v, b in bodies.items()}
    ref = fns["A_ok"]
    for attempt in range(500):
        edges = tt.edges(rng, p)
        ins = list(edges)
        seen = set(repr(x) for x in ins)
        tries = 0
        while len(ins) < n_tests and tries < 200:
            tries += 1
            a = tt.inputs(rng, p)
            if repr(a) not in seen:
                seen.add(repr(a))
                ins.append(a)
        outs = [run(ref, a) for a in ins]
        assert all(o[0] == "ok" for o in outs), (tt.key, p, outs)
        good = True
        for v in ("A_bad", "B_bad"):
            if all(run(fns[v], a) == o for a, o in zip(ins, outs)):
                good = False
        for v in ("B_ok",):
            if any(run(fns[v], a) != o for a, o in zip(ins, outs)):
                raise AssertionError("B_ok differs from A_ok for %s %r" % (tt.key, p))
        if good:
            break
    else:
        raise AssertionError("could not find tests that expose the bugs of %s %r" % (tt.key, p))
    prompt = make_prompt(tt, p, name, ref, rng)
    test = "\n\ndef check(candidate):\n" + "".join(
        "    assert candidate(" + ", ".join(repr(x) for x in a) + ") == " + repr(o[1]) + "\n"
        for a, o in zip(ins, outs))
    return {"prompt": prompt, "entry_point": name, "test": test, "bodies": bodies,
            "inputs": ins, "outputs": [o[1] for o in outs]}


def make_prompt(tt, p, name, ref, rng):
    """Signature + docstring (task text with the parameters spelled out, one example)."""
    ex = tt.inputs(rng, p)
    for _ in range(20):
        if ex[0] not in ([], "", 0):
            break
        ex = tt.inputs(rng, p)
    ex_out = run(ref, ex)[1]
    return ("def " + name + "(" + tt.args + "):\n"
            + '    """' + tt.docstring(p) + "\n"
            + "    >>> " + name + "(" + ", ".join(repr(x) for x in ex) + ")\n"
            + "    " + repr(ex_out) + "\n"
            + '    """\n')
