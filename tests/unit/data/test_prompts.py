import pytest

from coalition.data import prompts


def test_modes_render_with_chat_template(tiny_engine):
    tok = tiny_engine.tokenizer
    for mode in prompts.MODES:
        p = prompts.build(mode, "What is 2+2?", "End with 'The answer is N.'", "2+2=4.")
        text = prompts.render(p, tok)
        assert text.startswith("<|im_start|>user\n") and "What is 2+2?" in text
    agr = prompts.render(prompts.build("answer_given_rationale", "Q", "", "R"), tok)
    assert agr.endswith("<|im_start|>assistant\nThe answer is")
    assert "may or may not be correct" in prompts.build("refine", "Q", "", "R").user


def test_plain_layout_without_chat():
    text = prompts.render(prompts.build("answer", "Q?", "fmt"), None)
    assert text.endswith("Question: Q?\n\nAnswer: ")


def test_targets():
    assert prompts.target("answer", "4") == "The answer is 4."
    assert prompts.target("answer_given_rationale", "4") == " 4."
    assert prompts.target("rationale", "4", "2+2=4.") == "2+2=4. The answer is 4."
    assert prompts.target("refine", "4", "2+2=4. The answer is 4.") == "2+2=4. The answer is 4."
    with pytest.raises(ValueError, match="needs a rationale"):
        prompts.build("refine", "Q", "")
