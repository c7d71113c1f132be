from hypothesis import given
from hypothesis import strategies as st

from splitasr.text import CharTokenizer, normalize, number_to_words, ordinal_to_words


def test_normalize_lowercases_spells_numbers_and_drops_punctuation():
    assert normalize("At sea, Monday, March 16, 1908.") == "at sea monday march sixteen nineteen oh eight"
    assert normalize("The 29th very foggy.") == "the twenty ninth very foggy"
    assert normalize("Mr. Smith's dog-house!") == "mister smith's dog house"
    assert normalize("'quoted' words") == "quoted words"


def test_numerals_read_as_a_speaker_reads_them():
    # Whisper writes connected digits as numerals; the reference spells them.
    assert normalize("6880197") == "six eight eight zero one nine seven"
    assert normalize("0139") == "zero one three nine"
    assert normalize("7, 5, 5, 4") == "seven five five four"
    assert normalize("4-1-1-7") == "four one one seven"
    assert normalize("12,000 people") == "twelve thousand people"
    assert normalize("3.14") == "three point one four"
    assert normalize("50%") == "fifty percent"


def test_numbers():
    assert number_to_words(0) == "zero"
    assert number_to_words(42) == "forty two"
    assert number_to_words(1900) == "nineteen hundred"
    assert number_to_words(305) == "three hundred five"
    assert number_to_words(2000) == "two thousand"
    assert ordinal_to_words(3) == "third" and ordinal_to_words(20) == "twentieth"


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz' ", max_size=60))
def test_tokenizer_round_trips_normalised_text(text):
    tok = CharTokenizer()
    norm = normalize(text)
    assert tok.decode(tok.encode(norm)) == norm


@given(st.text(max_size=80))
def test_normalize_is_idempotent_and_in_vocab(text):
    once = normalize(text)
    assert normalize(once) == once
    assert set(once) <= set("abcdefghijklmnopqrstuvwxyz' ")
