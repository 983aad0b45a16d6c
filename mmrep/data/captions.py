"""Varied English captions for a digit, so that the text modality is not a lookup table.

A caption combines a template (what kind of sentence), a form of the number (a word, a
numeral, a Roman numeral, a synonym such as "nought"), and an optional detail about the
handwriting. Several
hundred distinct captions exist per digit; which one an example gets is drawn from a seeded
generator, so a split's captions are reproducible.
"""

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Other ways people write or say the number, beside its word and its numeral.
_SYNONYMS = {0: ("nought", "nil", "oh")}
_ROMAN = ("", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX")

_TEMPLATES = (
    "{a} handwritten {n}",
    "the digit {n}",
    "a scanned image of the number {n}",
    "someone wrote {a} {n} by hand",
    "{N}",
    "this is {a} {n}",
    "a small grayscale picture showing {a} {n}",
    "the figure {n}{detail}",
    "{a} hand-drawn {n} on a dark background",
    "can you see the {n}?",
    "number {n}{detail}",
    "it looks like {a} {n} to me",
    "{a} {n}{detail}",
    "a low-resolution {n}",
    "digit: {n}",
)

_DETAILS = (
    "",
    ", written quickly",
    " in thick strokes",
    " in thin strokes",
    ", slightly slanted",
    " from a scanned form",
    ", a bit blurry",
)


def number_forms(digit):
    """The ways `digit` can appear in a caption: word, numeral, Roman numeral, synonyms."""
    # Roman "I" would read as the pronoun, so one has no Roman form.
    roman = (_ROMAN[digit],) if digit > 1 else ()
    return (WORDS[digit], str(digit), *roman, *_SYNONYMS.get(digit, ()))


def _article(digit, form):
    # The article follows how the form is said: "an eight", "an 8", "an oh", "a one".
    return "an" if digit == 8 or form == "oh" else "a"


def make_caption(digit, rng):
    """A caption for `digit` drawn with the numpy generator `rng`."""
    forms = number_forms(digit)
    form = forms[rng.integers(len(forms))]
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    detail = _DETAILS[rng.integers(len(_DETAILS))]
    caption = template.format(a=_article(digit, form), n=form, N=form.capitalize(), detail=detail)
    return caption[0].upper() + caption[1:]


def make_captions(labels, seed):
    """One caption per label, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.array([make_caption(int(d), rng) for d in labels], dtype=object)
