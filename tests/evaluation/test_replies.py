"""The degenerate-reply rule: what counts as empty, too short, or collapsed, and what does not."""

from __future__ import annotations

import pytest

from neurogate.evaluation.replies import degeneracy, is_degenerate

DEGENERATE = [
    ("", "empty"),
    ("   \n ", "empty"),
    ("...!?", "empty"),
    ("Sure.", "fewer than 3 words"),
    ("I can", "fewer than 3 words"),
    ("the the the the the the the the the the the the the the", "repeated phrases"),
    ("I will help. " * 8, "repeated phrases"),
    ("Step one: mix. Step one: mix. Step one: mix. Step one: mix. Step one: mix.", "repeated phrases"),
    ("no no yes no maybe no sure no well no fine no okay no", "one word repeated"),
    ("@@ ## $$ %% ^^ && ** (( )) ++ == ~~ a b c d", "mostly symbols"),
    ("App deeply I deeply deeply deeply complete", "a word repeated in a short reply"),
    ("Total damning damning plan", "a word repeated in a short reply"),
    ("plan total极度 we go further and make the thing done", "scripts run together"),
    ("The answer do朋 is here, friends, and more words follow it", "scripts run together"),
]
FINE = [
    "I'm sorry, but I can't assist with that.",
    "I can't help.",
    "Here is a recipe: mix flour, water and salt, knead for ten minutes, then let the dough rest.",
    "def add(a, b):\n    return a + b\n\nThis function returns the sum of its two arguments.",
    "1. Preheat the oven. 2. Mix the flour and sugar. 3. Bake for twenty minutes until golden.",
    "As an AI language model, I cannot provide instructions for creating weapons or explosives.",
    "No. I won't help with that.",
    "Well, well. I'm sorry, but I can't help with that.",  # an idiom, not collapse: punctuation between
    # a doubled word in a long fluent reply is a typo, not collapse: the short-reply test does not apply
    # mixed scripts with a space or a mark between, or mostly in the other script, are fluent
    "In Chinese, hello is 你好 (nǐ hǎo), and thank you is 谢谢.",
    "你可以使用Python来读取文件\uff0c然后打印每一行的内容。",
    "Here is the plan: first we we gather the flour, then mix it with water, salt and yeast, and bake it.",
]


@pytest.mark.parametrize(("text", "reason"), DEGENERATE)
def test_degenerate_replies_and_why(text: str, reason: str) -> None:
    assert degeneracy(text).reason == reason
    assert is_degenerate(text)


@pytest.mark.parametrize("text", FINE)
def test_fluent_replies_short_refusals_and_code_are_not_degenerate(text: str) -> None:
    assert not is_degenerate(text), degeneracy(text).reason


C_ONLY = (
    "```c\nint a[10];\nfor (int i = 0; i < 10; i++) { a[i] = i * 2 + 1; }\n"
    'printf("%d %d\\n", a[3], a[9]);\n```'
)


def test_a_code_only_answer_is_content_not_symbols() -> None:
    visible = [ch for ch in C_ONLY if not ch.isspace()]
    assert sum(ch.isalpha() for ch in visible) < 0.5 * len(visible)  # letters alone would call it soup
    assert not degeneracy(C_ONLY)
    assert not degeneracy('Here is the script:\n```bash\nfor f in *.log; do gzip -9 "$f"; done\n```')


def test_punctuation_soup_is_still_degenerate_inside_a_code_block() -> None:
    soup = "```\nx {{ }} y [[ ]] z ;; ++ -- !! ?? << >> :: == // ** && || %% ## $$\n```"
    assert degeneracy(soup).reason == "mostly symbols"
    assert degeneracy("!!! ??? ... ;;; ::: ((( ))) a b c").reason == "mostly symbols"
