import pytest

from coalition.data.tasks import answers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12 + 7 = 19. The answer is 19.", "19"),
        ("First 3, then 4. The answer is 1,234.50", "1234.5"),
        ("#### -7", "-7"),
        ("so we get 5 and then 8", "8"),
        ("The answer is: 42", "42"),
        ("no digits here", None),
    ],
)
def test_extract_number(text, expected):
    assert answers.extract_number(text) == expected


def test_numbers_equal():
    assert answers.numbers_equal("3.0", "3")
    assert answers.numbers_equal("1,000", "1000")
    assert not answers.numbers_equal("3", "4")
    assert not answers.numbers_equal(None, "4")
    assert not answers.numbers_equal("x", "4")


def test_choice_yes_no_text():
    assert answers.extract_choice("I think (B) is tempting. The answer is (C).", "ABCDE") == "C"
    assert answers.extract_choice("Option A is wrong, D fits", "ABCD") == "D"
    assert answers.extract_yes_no("Yes it was flipped... The answer is no.") == "no"
    assert answers.extract_yes_no("That is true") == "yes"
    assert answers.extract_text('Concatenating gives "nkm". The answer is nkm.') == "nkm"
    assert answers.extract_text("line one\nfinal line.") == "final line"
