"""Read a meta-prompt the way an LLM would: scored prompts, the current prompt and its score, the
word limit, the output tags, the exemplars and the feedback on errors (reasons it recognises).

Parsing is lenient: several common layouts of prompts with scores are understood (``text: ...``
/ ``score: 73``, ``Prompt: ... Score: 73``, ``<prompt>...</prompt> score 0.73``, ``"..." (score:
73)``), scores given as fractions are shown on 0-100, and anything not found gets a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline.sim.feedback import diagnose, read_feedback

Mode = Literal["new", "modify"]

_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
}
_N = r"(?:\d+|" + "|".join(_NUMBER_WORDS) + r")"
_SCORE = r"(?P<s>-?\d+(?:\.\d+)?)\s*(?P<pct>%)?"
_SEP = r"[\s(\[{,;:|=\-]*"
_P_LABEL = r"(?:text|prompt|instruction)"
_S_LABEL = r"(?:score|accuracy|acc|performance)"

_SCORED = (
    re.compile(
        rf"(?is)(?<![\w<])(?:{_P_LABEL})\s*(?:#?\d+\s*)?[:=]\s*(?P<p>.{{1,600}}?)"
        rf"{_SEP}{_S_LABEL}\s*(?:is|of|was)?\s*[:=]?\s*{_SCORE}"
    ),
    re.compile(
        rf"(?is)<(?P<t>prompt|ins|instruction|text)>\s*(?P<p>.{{1,600}}?)\s*</(?P=t)>"
        rf"{_SEP}(?:{_S_LABEL})?\s*[:=]?\s*{_SCORE}"
    ),
    re.compile(
        rf"(?s)[\"\u201c](?P<p>[^\"\u201d\n]{{2,600}})[\"\u201d]{_SEP}{_S_LABEL}\s*[:=]?\s*"
        rf"{_SCORE}"
    ),
)
_SCORE_FIRST = re.compile(
    rf"(?im)^\s*{_S_LABEL}\s*[:=]\s*{_SCORE}\s*[,;|]?\s*\n?\s*{_P_LABEL}\s*[:=]\s*(?P<p>[^\n]+)"
)
_FIRST_SCORE_LABEL = re.compile(rf"(?i)\b{_S_LABEL}\s*[:=]")
_FIRST_PROMPT_LABEL = re.compile(rf"(?i)\b{_P_LABEL}\s*(?:#?\d+\s*)?[:=]")
_INNER_LABEL = re.compile(rf"(?i)(?:^|\n)\s*{_P_LABEL}\s*(?:#?\d+\s*)?[:=]\s*")
_CURRENT = re.compile(r"(?i)current\s+(?:prompt|instruction)s?\s*(?:is|was|reads)?\s*[:=]?[ \t]*")
_WRAPPERS = re.compile(r"(?is)^\s*(?:<(\w+)>)?\s*(.*?)\s*(?:</?\w+>)?\s*$")
_TRAILING_SCORE = re.compile(rf"(?i)[\s(\[,;]*{_S_LABEL}\s*[:=]?\s*-?\d+(?:\.\d+)?\s*%?[)\]]?\s*$")
_LIMIT = re.compile(
    rf"(?i)\b(?:up to|at most|no more than|not more than|a maximum of|maximum of|fewer than|"
    rf"less than|within|under|no longer than|not longer than|shorter than)\s+(?P<n>{_N})\s+"
    rf"words?\b|\b(?P<m>{_N})\s+words?\s+(?:or fewer|or less|at most|maximum)\b"
)
_CHANGE = re.compile(r"(?i)\b(?:chang|modif|edit|alter|replac|rewrit|revis|differ|tweak|adjust)")
_LENGTH = re.compile(
    r"(?i)\b(?:long|length|total|be (?:at most|no more than|up to|within|under))\b"
)
_MODIFY = re.compile(
    r"(?i)\b(?:modify|edit|revise|refine|rephrase|paraphrase|tweak|adjust|improve upon|update)\s+"
    r"(?:the\s+|this\s+|your\s+|my\s+)?(?:current\s+|given\s+|above\s+|original\s+|existing\s+)?"
    r"(?:prompt|instruction)"
)
_NEW = re.compile(
    r"(?i)\b(?:write|generate|create|propose|produce|come up with|give|suggest|craft|design)\s+"
    r"(?:me\s+)?(?:a|an|one|\d+|several|some)?\s*(?:new|novel|different|better|improved|"
    r"alternative|fresh)"
)
_COUNT = re.compile(
    rf"(?i)\b(?:write|wrote|generate|create|propose|produce|give|suggest)\s+(?:me\s+)?(?P<n>{_N})"
    r"\s+(?:\w+\s+){0,2}?(?:prompts|instructions|reasons)\b"
)
_WRAP = re.compile(
    r"(?i)\b(?:wrap|enclos|surround|between|inside|within|put|place|delimit|tag)\w*\b[^.\n]{0,80}?"
    r"<(?P<t>[A-Za-z][\w-]{0,30})>"
)
_STRONG = re.compile(
    r"(?i)<(?:start|ins)>|\b(?:new|improved|better|revised|modified|edited|different|"
    r"alternative|optimi[sz]ed|rewritten)\s+(?:\w+\s+)?(?:prompts?|instructions?)\b|"
    r"\bthe instruction was\b"
)
_ASK = re.compile(
    r"(?i)\b(?:write|generate|create|propose|produce|give|suggest|craft|design|modify|edit|"
    r"revise|refine|rewrite|improve|paraphrase|optimi[sz]e)\b[^.\n]{0,60}\b(?:prompts?|"
    r"instructions?)\b"
)
_REFLECT = re.compile(
    r"(?is)\b(?:why|reasons?|problems?|what went wrong|critique|feedback)\b.{0,160}\b(?:wrong|"
    r"errors?|mistakes?|incorrect|fail\w*)\b|\b(?:wrong|errors?|mistakes?|incorrect)\b.{0,200}"
    r"\b(?:why|reasons?)\b"
)
_CURRENT_SCORE = re.compile(
    r"(?i)\b(?:it|this prompt|the current prompt)\s+(?:scores|scored|gets|got|has a score of)"
    r"\s*[:=]?\s*(?P<s>\d+(?:\.\d+)?)\s*(?P<pct>%|out of 100|/\s*100)?"
)
_IN_LABEL = re.compile(r"(?i)^\s*(?:input|q|question|problem)\s*(?:#?\d+)?\s*[:\uff1a]\s*(.*)$")
_OUT_LABEL = re.compile(
    r"(?i)^\s*(?:output|a|answer|target|gold(?: answer)?|label|expected output|correct answer)"
    r"\s*(?:#?\d+)?\s*[:\uff1a]\s*(.*)$"
)


@dataclass(frozen=True, slots=True)
class ScoredPrompt:
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class Exemplar:
    input: str
    output: str


@dataclass(frozen=True, slots=True)
class MetaPrompt:
    """What an optimizer request asks for; ``scored`` scores are on 0-100."""

    scored: tuple[ScoredPrompt, ...] = ()
    current: str = ""
    change_limit: int | None = None
    length_limit: int | None = None
    mode: Mode = "new"
    tags: tuple[str, str] = ("<START>", "<END>")
    tags_named: bool = False
    exemplars: tuple[Exemplar, ...] = ()
    count: int = 1
    reflection: bool = False
    current_score: float | None = None
    feedback: tuple[str, ...] = ()  # diagnoses named in a feedback section
    symptoms: tuple[str, ...] = ()  # diagnoses seen in model outputs shown (for a critique)


def meta_strength(text: str) -> int:
    """2: clearly a meta-prompt; 1: it asks about prompts; 0: not a meta-prompt."""
    lower = text.lower()
    if "prompt" not in lower and "instruction" not in lower and "<" not in lower:
        return 0
    if _STRONG.search(text) or _WRAP.search(text) or _reflection_asked(text, lower):
        return 2
    return 1 if _ASK.search(text) else 0


def _reflection_asked(text: str, lower: str) -> bool:
    return ("prompt" in lower or "instruction" in lower) and bool(_REFLECT.search(text))


def parse_meta(text: str) -> MetaPrompt:
    """Everything the optimizer role reads from a meta-prompt."""
    scored = parse_scored(text)
    change, length = parse_limits(text)
    tags = parse_tags(text)
    current = parse_current(text) or _best(scored)
    return MetaPrompt(
        scored=scored,
        current=current,
        current_score=parse_current_score(text, current, scored),
        change_limit=change,
        length_limit=length,
        mode=parse_mode(text),
        tags=tags or ("<START>", "<END>"),
        tags_named=tags is not None,
        exemplars=parse_exemplars(text),
        count=parse_count(text),
        reflection=_reflection_asked(text, text.lower()) and not _STRONG.search(_untagged(text)),
        feedback=read_feedback(text),
        symptoms=tuple(diagnose(text)),
    )


def parse_current_score(text: str, current: str, scored: tuple[ScoredPrompt, ...]) -> float | None:
    """The current prompt's score on 0-100 ("It scores 55 out of 100."), or its score in the
    list of scored prompts, or None if the text does not give it."""
    match = _CURRENT_SCORE.search(text)
    if match:
        value = float(match.group("s"))
        return value * 100 if value <= 1.0 and not match.group("pct") else value
    return next((s.score for s in scored if s.text == current), None)


def _untagged(text: str) -> str:
    return re.sub(r"(?i)<(?:start|ins)>", " ", text)


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBER_WORDS[word.lower()]


def _clean(prompt: str) -> str:
    inner = _WRAPPERS.match(prompt)
    text = inner.group(2) if inner else prompt
    text = _TRAILING_SCORE.sub("", text).strip()
    return text.strip("\"'\u201c\u201d` ").strip()


def parse_scored(text: str) -> tuple[ScoredPrompt, ...]:
    """Prompts shown with scores, in order of appearance, deduplicated, scores on 0-100."""
    found = [(m.start(), m.group("p"), float(m.group("s"))) for m in _SCORE_FIRST.finditer(text)]
    if not found or not _score_comes_first(text):
        found = [
            (m.start(), _last_label(m.group("p")), float(m.group("s")))
            for pattern in _SCORED
            for m in pattern.finditer(text)
        ] or found
    pairs = {_clean(p): s for _, p, s in sorted(found)}
    pairs = {p: s for p, s in pairs.items() if p}
    scale = 100.0 if pairs and max(pairs.values()) <= 1.0 else 1.0
    return tuple(ScoredPrompt(text=p, score=s * scale) for p, s in pairs.items())


def _score_comes_first(text: str) -> bool:
    score = _FIRST_SCORE_LABEL.search(text)
    prompt = _FIRST_PROMPT_LABEL.search(text)
    return score is not None and (prompt is None or score.start() < prompt.start())


def _last_label(prompt: str) -> str:
    parts = _INNER_LABEL.split(prompt)
    return parts[-1]


def _best(scored: tuple[ScoredPrompt, ...]) -> str:
    if not scored:
        return ""
    top = max(s.score for s in scored)
    return [s.text for s in scored if s.score == top][-1]


def parse_current(text: str) -> str:
    """The prompt labelled "current prompt", or "" if there is none."""
    match = _CURRENT.search(text)
    if not match:
        return ""
    lines = text[match.end() :].split("\n")
    first = lines[0].strip()
    if not first or first.endswith(":") or first.lower().rstrip(".") in ("below", "shown below"):
        first = next((line.strip() for line in lines[1:] if line.strip()), "")
    return _clean(first)


def parse_limits(text: str) -> tuple[int | None, int | None]:
    """(words allowed to change, maximum prompt length in words), each None if not stated."""
    change: int | None = None
    length: int | None = None
    for match in _LIMIT.finditer(text):
        value = _number(match.group("n") or match.group("m"))
        sentence = _sentence_at(text, match.start(), match.end())
        if not _CHANGE.search(sentence) and _LENGTH.search(sentence):
            length = value if length is None else length
        else:
            change = value if change is None else change
    return change, length


def _sentence_at(text: str, start: int, end: int) -> str:
    left = max(text.rfind(c, 0, start) for c in ".\n!?")
    rights = [i for i in (text.find(c, end) for c in ".\n!?") if i >= 0]
    return text[left + 1 : min(rights) if rights else len(text)]


def parse_mode(text: str) -> Mode:
    """ "modify" if the last explicit request is to edit the current prompt, else "new"."""
    modify = [m.end() for m in _MODIFY.finditer(text)]
    new = [m.end() for m in _NEW.finditer(text)]
    if modify and (not new or modify[-1] > new[-1]):
        return "modify"
    return "new"


def parse_tags(text: str) -> tuple[str, str] | None:
    """The requested output delimiters, or None if the text names none."""
    wrap = _WRAP.search(text)
    if wrap:
        return _pair(wrap.group("t"))
    lower = text.lower()
    if "<start>" in lower:
        return "<START>", "<END>"
    if "square bracket" in lower:
        return "[", "]"
    if "<ins>" in lower:
        return "<INS>", "</INS>"
    return None


def _pair(tag: str) -> tuple[str, str]:
    if tag.upper() in ("START", "BEGIN"):
        return f"<{tag}>", "<END>" if tag.isupper() else "<end>"
    return f"<{tag}>", f"</{tag}>"


def parse_count(text: str) -> int:
    """How many prompts (or reasons) are asked for, 1 to 8."""
    match = _COUNT.search(text)
    return max(1, min(8, _number(match.group("n")))) if match else 1


def parse_exemplars(text: str) -> tuple[Exemplar, ...]:
    """Input/output pairs shown as ``Input:``/``Q:`` ... ``Output:``/``A:`` lines."""
    found: list[Exemplar] = []
    buffer: list[str] | None = None
    lines = text.split("\n")
    for i, line in enumerate(lines):
        start, end = _IN_LABEL.match(line), _OUT_LABEL.match(line)
        if start:
            buffer = [start.group(1)]
        elif end and buffer is not None:
            output = end.group(1).strip() or _next_line(lines, i)
            found.append(Exemplar(input="\n".join(buffer).strip(), output=output))
            buffer = None
        elif buffer is not None and "<" not in line and len(buffer) < 40:
            buffer.append(line)
    return tuple(e for e in found if e.input and e.output)


def _next_line(lines: list[str], i: int) -> str:
    return next((line.strip() for line in lines[i + 1 :] if line.strip()), "")
