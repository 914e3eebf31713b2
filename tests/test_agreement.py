"""LocalAgreement-2, the rule live transcription commits words by, as plain functions."""

from __future__ import annotations

from edge_asr.agreement import LocalAgreement, agreed


def test_words_agree_as_a_listener_hears_them():
    assert agreed(["Turn", "off", "the"], ["turn", "off,", "the", "lights"]) == 3
    assert agreed(["close", "the", "belt."], ["close", "the", "valve."]) == 2
    assert agreed([], ["anything"]) == 0


def test_what_two_decodes_in_a_row_agree_on_is_committed_once_and_never_taken_back():
    live = LocalAgreement()
    assert live.update("turn off the") == []  # one decode: nothing agreed yet
    assert live.update("Turn off the lights in there.") == ["Turn", "off", "the"]
    # later decodes start with the committed words (forced): only what follows is compared
    assert live.update("Turn off the lights in the pump room.") == ["lights", "in"]
    assert live.update("Turn off the lights in the pump room and close the belt.") == ["the", "pump", "room"]
    assert live.update("Turn off the lights in the pump room and close the valve.") == ["and", "close", "the"]
    assert live.text == "Turn off the lights in the pump room and close the"
    final = "Turn off the lights in the pump room and close the valve."
    assert live.final(final) == (final, ["valve."])


def test_a_decode_that_does_not_start_with_the_committed_words_commits_nothing():
    live = LocalAgreement()
    live.update("turn off")
    live.update("turn off the")
    assert live.update("") == [] and live.update("something else") == []
    assert live.text == "turn off"
    assert live.final("") == ("turn off", [])  # what was sent stays in the transcript
