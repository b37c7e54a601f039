"""Answer extraction and comparison shared by tasks: numbers, choice letters, yes/no, free text."""

from __future__ import annotations

import math
import re

# "The answer is 42", "answer: (B)", "#### 18" — the explicit statement wins over stray numbers.
_FINAL = re.compile(r"(?:answer\s*(?:is|:)|####)\s*:?\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def final_statement(text: str) -> str | None:
    """The text after the last "answer is"/"answer:"/"####", up to the end of its line."""
    matches = list(_FINAL.finditer(text))
    if not matches:
        return None
    return matches[-1].group(1).split("\n")[0].strip()


def normalize_number(text: str) -> str | None:
    """ "1,234.50" → "1234.5"; None when ``text`` is not a number."""
    text = text.strip().replace(",", "").rstrip(".")
    if re.fullmatch(r"-?\d+", text):  # exact for integers of any size
        return str(int(text))
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def extract_number(text: str) -> str | None:
    """The number the output states as its answer (else the last number in it)."""
    stated = final_statement(text)
    for source in (stated, text) if stated else (text,):
        found = _NUMBER.findall(source)
        if found:
            return normalize_number(found[0] if source is stated else found[-1])
    return None


def numbers_equal(a: str | None, b: str | None, rel: float = 1e-6) -> bool:
    if a is None or b is None:
        return False
    na, nb = normalize_number(a), normalize_number(b)
    if na is None or nb is None:
        return False
    return math.isclose(float(na), float(nb), rel_tol=rel, abs_tol=1e-9)


def extract_choice(text: str, letters: str) -> str | None:
    """A choice letter from ``letters`` ("ABCDE"): the stated one, else the last one standing alone."""
    pattern = re.compile(rf"\(?\b([{letters}])\b\)?")
    stated = final_statement(text)
    if stated:
        found = pattern.findall(stated)
        if found:
            return found[0]
    found = pattern.findall(text)
    return found[-1] if found else None


def extract_yes_no(text: str) -> str | None:
    """ "yes"/"no" as stated (true/false count), else the last one mentioned."""
    pattern = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
    stated = final_statement(text)
    for source, pick in ((stated, 0), (text, -1)):
        if source:
            found = pattern.findall(source)
            if found:
                word = found[pick].lower()
                return {"true": "yes", "false": "no"}.get(word, word)
    return None


def normalize_text(text: str) -> str:
    text = text.strip().strip("\"'`").rstrip(".").strip().strip("\"'`")
    return re.sub(r"\s+", " ", text).lower()


def extract_text(text: str) -> str | None:
    """Free-text answer: the stated one (first sentence of it), else the last non-empty line."""
    stated = final_statement(text)
    if stated:
        return normalize_text(re.split(r"(?<=[a-z0-9\"'])\.\s", stated)[0])
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return normalize_text(lines[-1]) if lines else None
