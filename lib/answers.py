"""Answer extraction: where, in a model's output, is its final answer? Two named policies.

`extract(text, policy)` returns an `Extraction`; `lib.verify` checks what it finds. Extraction
never raises on odd text (a completion cut anywhere, a megabyte of braces); it raises TypeError
only for a non-string.

strict (the recipe's trained format; the RL reward and the recipe's own evaluation use it)
-----------------------------------------------------------------------------------------
* The answer is the content of the LAST complete `\\boxed{...}` or `\\fbox{...}` (braces matched,
  escaped `\\{` `\\}` ignored; `\\boxed 5` without braces also accepted) in the answer region;
  `\\boxed{\\boxed{42}}` unwraps to `42`.
* The answer region is the text after the LAST `</think>`. A completion with no think tag at all
  is searched whole. `<think>` with no `</think>` after it (the model never stopped reasoning,
  typically truncated at max length) has no answer region.
* So: no box, an unclosed think block, a box only inside the think block, or an empty box =>
  no answer (`None`). A model is paid only for the format it was taught.
* Text with no box and no think tag of at most `MAX_BARE_ANSWER_CHARS` (300) characters is a
  bare answer ("3/4", "(1, 2)", "$\\frac{3}{4}$"; math delimiters stripped); longer unboxed text
  is a completion that gave no answer.

lenient (outputs from anywhere: a hub model's generations, another project's eval dump)
--------------------------------------------------------------------------------------
* Region: after the last `</think>` if there is one, else the whole text (an unclosed think
  block is searched too); chat-template debris (`<|im_start|>user ...`, `<|eot_id|>`, `</s>`)
  and everything after it is cut off.
* Boxes first. Several boxes that end the text together (separated only by a short connector:
  a comma, "and", `\\quad \\text{and} \\quad`, no sentence break) are one answer, joined as a
  set/tuple list: `\\boxed{(1, 2)}, \\boxed{(2, 1)}` -> `(1, 2), (2, 1)`; repeated boxes count once.
* No box: math-verify's own extraction runs on the region (in the checker, under its
  deadline) with `LatexExtractionConfig(boxed_match_priority=0)` and `ExprExtractionConfig()`,
  i.e. its priorities: "final answer is" > "answer:" > "answer ..." > the last LaTeX or plain
  number/expression. What it lacks is added here, before it runs: the answer phrases of other
  languages ("Réponse :", "答案是", "Ответ:", ...) are rewritten to "answer:", `14{,}916` to
  `14,916`, `\\!` dropped, a sign `+7` to `7`. Only the last `MAX_SEARCH_CHARS` are searched.
* Multiple choice (gold is a letter A-E, or a letter followed by the option's text such as
  `(D) Alina`): a boxed or bare letter, else math-verify's `StringExtractionConfig` on the
  region ("I think it's B", "D. it can't be A or B", "The answer: D"); full-width, Cyrillic
  and Greek look-alike letters count as the Latin ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

POLICIES = ("strict", "lenient")
# Unboxed text up to this long is taken as a bare answer ("3/4", a 2x2 matrix); the longest
# MATH-500 answer has 53 characters.
MAX_BARE_ANSWER_CHARS = 300
# Lenient: the tail of an unboxed region that math-verify searches. Final answers sit at the end;
# a 20,000-character completion would only cost regex time on text that holds no answer.
MAX_SEARCH_CHARS = 4_000
# Lenient: boxes at most this far apart (and with no sentence break between) are one answer.
MAX_BOX_GAP_CHARS = 60


@dataclass(frozen=True)
class Extraction:
    """What extraction found. `answer` None means no answer; `reason` then says why.

    `search` is True when `answer` is a region of text in which math-verify's own extraction
    still has to find the answer (lenient policy, no box); False when `answer` is the answer.
    """

    answer: str | None
    search: bool = False
    reason: str = ""


def extract(text: str, policy: str = "strict") -> Extraction:
    """The final answer of `text` (a whole completion or a bare answer) under `policy`."""
    if policy == "strict":
        answer = prediction_to_answer(text)
        return Extraction(answer, False, "" if answer is not None else why_no_answer(text))
    if policy == "lenient":
        return lenient_answer(text)
    raise ValueError(f"unknown extraction policy {policy!r}; choose one of {POLICIES}")


# ---------------------------------------------------------------------------------------------
# Strict
# ---------------------------------------------------------------------------------------------


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOX_CMD_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# An escape (`\{`, `\\`) is consumed whole so that `\{` is not a brace but `\\{` is.
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_MATH_DELIMS = (("$$", "$$"), ("$", "$"), ("\\[", "\\]"), ("\\(", "\\)"))


def answer_region(completion: str) -> str | None:
    """The part of a completion where the final answer may be, or None if there is none.

    After the last `</think>`; the whole text when there is no think tag at all; None when a
    `<think>` is never closed (that includes a `<think>` reopened after the last `</think>`).
    """
    if THINK_CLOSE in completion:
        region = completion.rsplit(THINK_CLOSE, 1)[1]
        return None if THINK_OPEN in region else region
    if THINK_OPEN in completion:
        return None
    return completion


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """Map each `{` at or after `start` to its matching `}` in one linear pass (escapes skipped).

    Linear so that a 1 MB string of unbalanced `\\boxed{` costs one scan, not one per box.
    """
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete `\\boxed{...}` / `\\fbox{...}` (incomplete skipped).

    `start` is where the command begins, `end` the position of its closing brace (or the end of
    a brace-less `\\boxed 5` argument). A text cut right after `\\boxed` or `\\boxed{` has none.
    """
    commands = list(BOX_CMD_RE.finditer(text))
    if not commands:
        return []
    pairs = _matching_braces(text, commands[0].start())
    out = []
    for m in commands:
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            close = pairs.get(i)
            if close is not None:
                out.append((m.start(), close, text[i + 1 : close]))
        elif i > m.end() and i < len(text):
            # `\boxed 5` (TeX allows a single token argument); stop at space or math delimiter.
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                out.append((m.start(), i + token.end(), token.group()))
    return out


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """(end position, content) of every complete box (see `_box_spans`)."""
    return [(end, content) for _, end, content in _box_spans(text)]


def last_boxed(text: str) -> str | None:
    """Content of the box that ends last in `text` (the outer one when boxes nest), non-empty.

    `\\boxed{\\boxed{x}}` unwraps to `x`; in `\\boxed{1 + \\fbox{2}}` the answer is `1 + \\fbox{2}`.
    """
    for _, content in sorted(_boxed_contents(text), reverse=True):
        content = content.strip()
        while (inner := _whole_box(content)) is not None:  # \boxed{\boxed{5}} -> 5
            content = inner.strip()
        if content:
            return content
    return None


def _whole_box(s: str) -> str | None:
    """If all of `s` is one `\\boxed{...}`, its content; else None (`\\boxed{a}{b}` is not)."""
    m = BOX_CMD_RE.match(s)
    if not m:
        return None
    i = m.end()
    while i < len(s) and s[i] in " \t":
        i += 1
    if i < len(s) and s[i] == "{" and _matching_braces(s, i).get(i) == len(s) - 1:
        return s[i + 1 : -1]
    return None


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion: the last box after the reasoning block, or None.

    See the module docstring for the exact rules. Never raises on odd text; raises TypeError
    if `completion` is not a string.
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    region = answer_region(completion)
    return None if region is None else last_boxed(region)


def strip_math_delimiters(text: str) -> str:
    s = text.strip()
    for left, right in _MATH_DELIMS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def prediction_to_answer(text: str) -> str | None:
    """Answer from either a whole completion (box / think tags present) or a bare answer.

    Text with no box and no think tag is a bare answer only if it is at most
    `MAX_BARE_ANSWER_CHARS` long; a longer one is a completion that forgot to box its answer
    (None: no answer), not a 2,000-character "answer" to be parsed.
    """
    if not isinstance(text, str):
        raise TypeError(f"prediction must be a str, got {type(text).__name__}")
    if THINK_OPEN in text or THINK_CLOSE in text or BOX_CMD_RE.search(text):
        return extract_answer(text)
    answer = strip_math_delimiters(text)
    if len(answer) > MAX_BARE_ANSWER_CHARS:
        return None
    return answer or None


def why_no_answer(prediction: str) -> str:
    if THINK_OPEN in prediction and answer_region(prediction) is None:
        return "unclosed_think"
    if not prediction.strip():
        return "empty"
    if not BOX_CMD_RE.search(prediction) and len(prediction.strip()) > MAX_BARE_ANSWER_CHARS:
        return "no_box"
    if BOX_CMD_RE.search(prediction) and THINK_CLOSE in prediction:
        region = answer_region(prediction) or ""
        if not BOX_CMD_RE.search(region):
            return "box_only_in_think"
    return "no_answer"


_CHOICE_RE = re.compile(
    r"^\s*(?:\\text(?:bf)?\{\s*)?(?:option\s*|choice\s*)?\(?\s*([A-Ea-e])\s*\)?[.:]?\s*\}?\s*$"
)
# A prediction may repeat the option text after its letter: `(B) 5`, `\textbf{(B) } 5`, `B) 5`.
_CHOICE_WITH_TEXT_RE = re.compile(r"^\s*(?:\\text(?:bf)?\{\s*)?(?:\(([A-E])\)|([A-E])\))")


def choice_letter(s: str, *, gold: bool = False) -> str | None:
    """`A`, `(A)`, `\\text{(A)}`, `\\textbf{B}`, `C)` -> the upper-case letter; anything else None.

    For a gold only a bare upper-case letter counts (a lower-case `e` is more likely Euler's
    number); a prediction may also be a letter in parentheses followed by the option's text.
    """
    m = _CHOICE_RE.match(s)
    if m:
        letter = m.group(1)
        if gold and not letter.isupper():
            return None
        return letter.upper()
    if not gold:
        m = _CHOICE_WITH_TEXT_RE.match(s)
        if m and len(set(re.findall(r"\(([A-E])\)|\b([A-E])\)", s)) - {("", "")}) <= 1:
            return m.group(1) or m.group(2)  # exactly one letter named: "(A) or (B)" is a hedge
    return None


# ---------------------------------------------------------------------------------------------
# Lenient
# ---------------------------------------------------------------------------------------------

# Chat-template special tokens (`<|im_start|>`, `<|eot_id|>`, `<|end|>`), Llama/Mistral ones.
_DEBRIS_RE = re.compile(r"<\|[A-Za-z0-9_\-: ]{1,40}\|>|</s>|<s>|\[/?INST\]|<end_of_turn>|<start_of_turn>")
# "answer" in the languages math benchmarks come in; the English ones math-verify reads itself.
_FOREIGN_ANSWER_RE = re.compile(
    r"(?i:r[ée]ponse(?:\s+finale)?|respuesta(?:\s+final)?|resposta(?:\s+final)?|risposta(?:\s+finale)?"
    r"|(?:endg[üu]ltige\s+)?antwort|antwoord|odpowied[źz]|ответ|відповідь|jawaban|cevap|svar|vastaus"
    r"|c[âa]u\s+tr[ảa]\s+l[ờo]i|đáp\s+án|उत्तर|الإجابة|الجواب|คำตอบ|정답|답)"
    r"|最终答案|最終答案|答案|答え|解答|答"
)
_FOREIGN_TAIL_RE = re.compile(r"^\s*(?:\*\*)?\s*(?:[:：=]|是|为|為|は|est|es|ist|é|è|:)?\s*(?:\*\*)?\s*[:：]?")
_SENTENCE_BREAK_RE = re.compile(r"\.\s|\n\s*\n|[.!?]$|。")
_LOOKALIKE = str.maketrans(
    "ＡＢＣＤＥａｂｃｄｅАВСЕаеΑΒΕ",  # full-width; Cyrillic А В С Е а е; Greek Α Β Ε
    "ABCDEabcdeABCEaeABE",
)
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
# A gold that names its option: "(D) Alina", "C Cecile", "B. 12", "E) none".
_GOLD_CHOICE_WITH_TEXT_RE = re.compile(r"^\s*\(?([A-E])(?:\)|\.|:)?\s+[^\s=<>+\-*/^,.;:]")


def lenient_region(text: str) -> str:
    """The lenient answer region: after the last `</think>`, chat-template debris cut off."""
    if not isinstance(text, str):
        raise TypeError(f"prediction must be a str, got {type(text).__name__}")
    region = text.rsplit(THINK_CLOSE, 1)[1] if THINK_CLOSE in text else text.replace(THINK_OPEN, " ")
    first = _DEBRIS_RE.search(region)
    while first is not None and not region[: first.start()].strip():  # debris before the answer
        region = region[first.end() :]
        first = _DEBRIS_RE.search(region)
    if first is not None:
        region = region[: first.start()]
    return region.strip()


def final_boxes(region: str) -> str | None:
    """The boxes that end `region` together, joined (`a, b`), repeats once; or None if no box."""
    spans = [s for s in _box_spans(region)]
    # Drop boxes nested inside another box (`\boxed{1 + \fbox{2}}`): the outer one is the answer.
    spans = [s for s in spans if not any(o[0] < s[0] and s[1] < o[1] for o in spans)]
    if not spans:
        return None
    spans.sort()
    run = [spans[-1]]
    for prev in reversed(spans[:-1]):
        gap = region[prev[1] + 1 : run[0][0]]
        if len(gap) > MAX_BOX_GAP_CHARS or _SENTENCE_BREAK_RE.search(gap.strip(" $\\[]()")):
            break
        run.insert(0, prev)
    parts: list[str] = []
    for _, _, content in run:
        content = content.strip()
        while (inner := _whole_box(content)) is not None:
            content = inner.strip()
        if content and content not in parts:
            parts.append(content)
    return ", ".join(parts) if parts else None


def _drop_unary_plus(t: str) -> str:
    """Remove a plus sign that is a sign ("+7", "is +7", "= +3", "(+5)"), never a binary plus
    between operands ("200 + 20", "x + 7", "a+1"): a plus after a number, a closing bracket, a
    one-letter variable, or glued to what precedes it stays."""
    def sign(m: re.Match) -> str:
        head = t[: m.start()]
        if head[-1:] and (head[-1:].isalnum() or head[-1:] in ")]}."):
            return m.group(0)  # glued: "a+1", "2+3"
        word = re.search(r"(\w+)\s*$", head)
        if word and (word.group(1)[-1].isdigit() or len(word.group(1)) == 1):
            return m.group(0)  # after an operand: "200 + 20", "x + 7"
        if re.search(r"[)\]}.]\s*$", head):
            return m.group(0)
        return ""

    return re.sub(r"\+\s*(?=\d)", sign, t)


def search_text(region: str) -> str:
    """The region as math-verify's own extraction should see it (what it lacks, added)."""
    t = region[-MAX_SEARCH_CHARS:]
    matches = list(_FOREIGN_ANSWER_RE.finditer(t))
    if matches:
        m = matches[-1]
        tail = _FOREIGN_TAIL_RE.sub("", t[m.end() :], count=1)
        t = t[: m.start()] + "answer: " + tail
    t = t.replace("{,}", ",").replace("\\!", "")
    t = _drop_unary_plus(t)  # "+7" -> "7" (math-verify's numbers take no +); "200 + 20" keeps its +
    return t


def lenient_answer(text: str) -> Extraction:
    """Lenient extraction (module docstring): joined final boxes, else a region to search."""
    region = lenient_region(text)
    if not region:
        return Extraction(None, False, "empty")
    boxed = final_boxes(region)
    if boxed is not None:
        return Extraction(boxed, False)
    bare = strip_math_delimiters(region)
    prose = re.search(r"[A-Za-z]{3,}\s+[A-Za-z]{2,}|(?i:answer)", bare) or _FOREIGN_ANSWER_RE.search(bare)
    if len(bare) <= MAX_BARE_ANSWER_CHARS and "\n" not in bare and not prose:
        # A bare answer (no prose): checked as an answer, and searched too if it does not parse.
        return Extraction(bare, False)
    return Extraction(search_text(region), True)


def lenient_gold_choice(gold: str) -> str | None:
    """The letter of a multiple-choice gold: `D`, `(D)`, `\\text{(D)}`, `(D) Alina`, `C Cecile`."""
    g = _unwrap_text(strip_math_delimiters(gold)).translate(_LOOKALIKE)
    letter = choice_letter(g, gold=True)
    if letter is not None:
        return letter
    m = _GOLD_CHOICE_WITH_TEXT_RE.match(g)
    return m.group(1) if m and len(g) <= MAX_BARE_ANSWER_CHARS else None


def lenient_choice(text: str) -> str | None:
    """The letter a prediction chose: boxed or bare letter, else math-verify's string extraction."""
    region = lenient_region(text)
    boxed = final_boxes(region)
    for candidate in (boxed, strip_math_delimiters(region)):
        if candidate is not None:
            letter = choice_letter(_unwrap_text(candidate).translate(_LOOKALIKE))
            if letter is not None:
                return letter
    if boxed is not None:
        return None  # a boxed non-letter is an answer, just not a choice
    from math_verify import StringExtractionConfig, parse

    found = parse(
        search_text(region).translate(_LOOKALIKE),
        [StringExtractionConfig(strings=("A", "B", "C", "D", "E"), lowercase=False)],
        parsing_timeout=None,  # type: ignore[arg-type]  # regex only, no sympy: nothing to bound
    )
    return found[0] if found else None


def _unwrap_text(s: str) -> str:
    for _ in range(3):
        s = _WRAPPER_RE.sub(r"\1", s)
    return s.strip()


# ---------------------------------------------------------------------------------------------
# Pre-filter: answers too long or too deeply nested to check (cheap, pure; run in the parent)
# ---------------------------------------------------------------------------------------------

# Caps (lib.verify's module docstring has the numbers behind them: the longest MATH-500 answer
# has 53 characters, the deepest 2 levels; sympy's cost grows exponentially with nesting).
MAX_ANSWER_CHARS = 1_000
MAX_NESTING = 12


def nesting_depth(s: str) -> int:
    """Deepest nesting of (), [], {} (escaped braces count too: they nest the parser as well)."""
    depth = best = 0
    for ch in s:
        if ch in "([{":
            depth += 1
            best = max(best, depth)
        elif ch in ")]}":
            depth = max(0, depth - 1)
    return best


def prefilter(s: str, max_chars: int = MAX_ANSWER_CHARS, max_nesting: int = MAX_NESTING) -> str | None:
    """Reason to refuse `s` as unverifiable without parsing it ("too_long"/"too_deep"), or None."""
    if len(s) > max_chars:
        return "too_long"
    if nesting_depth(s) > max_nesting:
        return "too_deep"
    return None
