"""A small, strict parser of the Prometheus text exposition format (0.0.4), for tests.

Strict where node_exporter's textfile collector is strict: every sample belongs to a
family announced by # TYPE before it, names and labels match the spec's grammar, label
values use only the three allowed escapes, values are Go-parsable floats, no sample is
repeated, histograms have cumulative, non-decreasing buckets ending in le="+Inf" whose
value equals _count.
"""
import math
import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_SAMPLE = re.compile(r"^(%s)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$" % NAME)
_LABEL_PAIR = re.compile(r'\s*(%s)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"\s*(,|$)' % LABEL)
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum", "")}


class ParseError(ValueError):
    pass


def _value(text, lineno):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ParseError("line %d: bad value %r" % (lineno, text))


def _labels(text, lineno):
    out = {}
    pos = 0
    text = text or ""
    while pos < len(text):
        m = _LABEL_PAIR.match(text, pos)
        if not m:
            raise ParseError("line %d: bad labels %r" % (lineno, text))
        name, raw = m.group(1), m.group(2)
        if name in out:
            raise ParseError("line %d: label %s repeated" % (lineno, name))
        out[name] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        pos = m.end()
    return out


def parse(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}; raises ParseError."""
    if not text.endswith("\n"):
        raise ParseError("the text must end with a newline")
    families = {}
    seen = set()
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if not re.match("^%s$" % NAME, parts[2]):
                    raise ParseError("line %d: bad metric name %r" % (lineno, parts[2]))
                fam = families.setdefault(parts[2], {"type": None, "help": None, "samples": []})
                if parts[1] == "TYPE":
                    if fam["type"] is not None or fam["samples"]:
                        raise ParseError("line %d: TYPE for %s after its samples or twice" % (lineno, parts[2]))
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ParseError("line %d: bad TYPE line" % lineno)
                    fam["type"] = parts[3]
                else:
                    fam["help"] = parts[3] if len(parts) == 4 else ""
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ParseError("line %d: not a sample: %r" % (lineno, line))
        name, labels, value = m.group(1), _labels(m.group(3), lineno), _value(m.group(4), lineno)
        family = None
        for fname, fam in families.items():
            suffixes = SUFFIXES.get(fam["type"], ("",))
            if any(name == fname + s for s in suffixes):
                family = fname
        if family is None or families[family]["type"] is None:
            raise ParseError("line %d: sample %s without a # TYPE before it" % (lineno, name))
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ParseError("line %d: duplicate sample %s%s" % (lineno, name, labels))
        seen.add(key)
        fam = families[family]
        if fam["type"] == "counter" and (value < 0 or math.isnan(value)):
            raise ParseError("line %d: counter %s is %r" % (lineno, name, value))
        fam["samples"].append((name, labels, value))
    for fname, fam in families.items():
        if fam["type"] == "histogram":
            _check_histogram(fname, fam["samples"])
    return families


def _check_histogram(fname, samples):
    series = {}
    counts = {}
    for name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if name == fname + "_bucket":
            if "le" not in labels:
                raise ParseError("%s: bucket without le" % fname)
            series.setdefault(rest, []).append((_value(labels["le"], 0), value))
        elif name == fname + "_count":
            counts[rest] = value
    for rest, buckets in series.items():
        les = [le for le, _v in buckets]
        if les != sorted(les) or les[-1] != math.inf:
            raise ParseError("%s%s: buckets not ascending or no +Inf" % (fname, dict(rest)))
        values = [v for _le, v in buckets]
        if any(b < a for a, b in zip(values, values[1:])):
            raise ParseError("%s%s: buckets not cumulative" % (fname, dict(rest)))
        if rest in counts and counts[rest] != values[-1]:
            raise ParseError("%s%s: _count %s != +Inf bucket %s" % (fname, dict(rest), counts[rest], values[-1]))
