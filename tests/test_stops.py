"""StopMatcher over text arriving in pieces, split at every point."""
from __future__ import annotations

import random

import pytest

from lila.generation.stops import StopMatcher


def expected_output(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the stop string that is complete first, as if generated one
    character at a time (the longest, if several end at the same character)."""
    for end in range(1, len(text) + 1):
        done = [s for s in stops if s and text[:end].endswith(s)]
        if done:
            return text[:end - max(map(len, done))], True
    return text, False


def stream(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    """Feed pieces, checking after each that nothing emitted could later turn out to be
    part of a stop and that nothing more is held back than a stop's length."""
    full = "".join(pieces)
    final, _ = expected_output(full, stops)
    matcher, emitted, pushed = StopMatcher(stops), "", ""
    for piece in pieces:
        out, stopped = matcher.push(piece)
        emitted += out
        pushed += piece
        assert final.startswith(emitted), (pieces, stops, emitted)
        if stopped:
            return emitted, True
        longest = max((len(s) for s in stops), default=1)
        assert len(pushed) - len(emitted) < longest
    return emitted + matcher.flush(), False


def splits(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, len(text) - 1))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def test_random_texts_and_stops():
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("ab<|>") for _ in range(rng.randint(0, 20)))
        stops = ["".join(rng.choice("ab<|>") for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(0, 3))]
        assert stream(splits(text, rng), stops) == expected_output(text, stops)


@pytest.mark.parametrize("stops", [["<|im_end|>"], ["<|im_end|>", "<|endoftext|>"],
                                   ["User:", "Us"], ["\n\n"]])
def test_every_split_point(stops):
    text = "Hello! <|im_e and User - then\n more <|im_end|> after User:\n\n<|endoftext|>"
    expected = expected_output(text, stops)
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert stream([text[:i], text[i:j], text[j:]], stops) == expected
    assert stream(list(text), stops) == expected   # one character at a time


def test_stop_split_across_many_pushes():
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.push("Hi <") == ("Hi ", False)
    assert matcher.push("|im") == ("", False)
    assert matcher.push("_en") == ("", False)
    assert matcher.push("d|> never") == ("", True)
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_false_start_is_released():
    matcher = StopMatcher(["<|im_end|>"])
    assert matcher.push("a <|im") == ("a ", False)
    assert matcher.push("age") == ("<|image", False)
    assert matcher.push(" <") == (" ", False)
    assert matcher.flush() == "<"


def test_overlapping_stop():
    assert stream(["a", "a", "a", "b", "c"], ["aab"]) == ("a", True)
    assert stream(["aaab"], ["aab"]) == ("a", True)


def test_stop_that_is_a_prefix_of_another():
    assert stream(["x ab", "c"], ["abc", "ab"]) == ("x ", True)
    assert stream(["x a", "bc"], ["abc", "ab"]) == ("x ", True)
    assert stream(["x a", "c"], ["abc", "ab"]) == ("x ac", False)


def test_earliest_of_several_stops_wins():
    assert stream(["one STOP two END"], ["END", "STOP"]) == ("one ", True)


def test_the_stop_completed_first_wins_however_the_text_is_split():
    # "<" is complete before "b<|" is: generation stops there, whether the text came
    # in one piece or one character at a time.
    assert stream(["ab<|"], ["b<|", "<"]) == ("ab", True)
    assert stream(list("ab<|"), ["b<|", "<"]) == ("ab", True)


def test_no_stops_passes_everything_through():
    matcher = StopMatcher([])
    assert matcher.push("anything <|im_end|>") == ("anything <|im_end|>", False)
    assert matcher.flush() == ""
    assert StopMatcher([""]).push("text") == ("text", False)   # an empty stop is ignored


def test_unicode_stops():
    stops = ["ストップ", "🛑"]
    text = "日本語のテキスト スト and ストップ here 🛑"
    for i in range(len(text) + 1):
        assert stream([text[:i], text[i:]], stops) == ("日本語のテキスト スト and ", True)
    assert stream(["ok 🛑"], ["🛑"]) == ("ok ", True)
