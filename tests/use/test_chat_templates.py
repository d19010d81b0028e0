"""Templated policy text back into (history, prompt, response): each template as its tokenizer
renders it, written out by hand from the template (no hub access in tests)."""

import pytest

from mrm_lightning.use.chat_templates import parse_templated, strip_special_tokens

SYSTEM = "You are a helpful assistant."
# The conversation every multi-turn fixture renders: a system message (where the template has
# one), a first exchange, then the prompt and the response being scored.
MULTI = (
    (("system", SYSTEM), ("user", "Hi"), ("assistant", "Hello! How can I help?")),
    "Name a colour.",
    "Blue.",
)
MULTI_NO_SYSTEM = (MULTI[0][1:], *MULTI[1:])
SINGLE = ((), "Hi", "Hello!")

CASES = {
    # Qwen2.5 / ChatML, generation stopped at <|im_end|>
    "chatml_single": (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>",
        SINGLE,
    ),
    # add_generation_prompt=False: every turn closed, "\n" after the last
    "chatml_multi": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\nBlue.<|im_end|>\n",
        MULTI,
    ),
    # Qwen3 with thinking off: the template writes an empty thinking block
    "qwen3_no_thinking": (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "Hello!<|im_end|>",
        SINGLE,
    ),
    # Phi-4: ChatML with <|im_sep|> after the role
    "phi4": (
        "<|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>Hello!<|im_end|>",
        SINGLE,
    ),
    "llama3_single": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        SINGLE,
    ),
    "llama3_multi": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>",
        MULTI,
    ),
    # Llama 3.1+: the date preamble heads the system turn; alone, no system message was given
    "llama31_date_only": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        SINGLE,
    ),
    "llama31_multi": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>",
        MULTI,
    ),
    # Mistral v0.1 (tokenizer v1) as decoded: "<s> [INST] ... [/INST]" with spaces
    "mistral_v1_single": ("<s> [INST] Hi [/INST] Hello!</s>", SINGLE),
    "mistral_v1_multi": (
        "<s> [INST] Hi [/INST] Hello! How can I help?</s> [INST] Name a colour. [/INST] Blue.</s>",
        MULTI_NO_SYSTEM,
    ),
    # Mistral v0.3 (tokenizer v3): no space before [/INST]
    "mistral_v3_multi": (
        "<s>[INST] Hi[/INST] Hello! How can I help?</s>[INST] Name a colour.[/INST] Blue.</s>",
        MULTI_NO_SYSTEM,
    ),
    # Mistral Small 3 (tekken): no spaces at all, a system block of its own
    "mistral_tekken_multi": (
        "<s>[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT]"
        "[INST]Hi[/INST]Hello! How can I help?</s>[INST]Name a colour.[/INST]Blue.</s>",
        MULTI,
    ),
    "llama2_single": ("<s>[INST] Hi [/INST] Hello! </s>", SINGLE),
    # Llama 2: <<SYS>> block in the first user turn, <s> before every [INST]
    "llama2_multi": (
        "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHi [/INST] "
        "Hello! How can I help? </s><s>[INST] Name a colour. [/INST] Blue. </s>",
        MULTI,
    ),
    "gemma_single": (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
        SINGLE,
    ),
    # Gemma has no system role (Gemma 3 folds it into the first user turn)
    "gemma_multi": (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\nBlue.<end_of_turn>\n<eos>",
        MULTI_NO_SYSTEM,
    ),
    "phi3_single": ("<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>", SINGLE),
    "phi3_multi": (
        "<s><|system|>\nYou are a helpful assistant.<|end|>\n"
        "<|user|>\nHi<|end|>\n<|assistant|>\nHello! How can I help?<|end|>\n"
        "<|user|>\nName a colour.<|end|>\n<|assistant|>\nBlue.<|end|>",
        MULTI,
    ),
    "zephyr_single": ("<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n", SINGLE),
    "zephyr_multi": (
        "<|system|>\nYou are a helpful assistant.</s>\n"
        "<|user|>\nHi</s>\n<|assistant|>\nHello! How can I help?</s>\n"
        "<|user|>\nName a colour.</s>\n<|assistant|>\nBlue.</s>\n",
        MULTI,
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_each_template_parses_to_the_plain_conversation(name):
    text, expected = CASES[name]
    assert parse_templated(text) == expected


# The policy's reply cut off before its end token (max length reached), one per template.
OPEN = {
    "chatml": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!",
    "llama3": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!",
    "mistral": "<s>[INST] Hi [/INST] Hello!",
    "gemma": "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!",
    "phi3": "<|user|>\nHi<|end|>\n<|assistant|>\nHello!",
    "zephyr": "<|user|>\nHi</s>\n<|assistant|>\nHello!",
}


@pytest.mark.parametrize("name", OPEN)
def test_an_open_final_assistant_turn_is_the_response(name):
    assert parse_templated(OPEN[name]) == SINGLE


def test_an_empty_generation_is_an_empty_response():
    text = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert parse_templated(text) == ((), "Hi", "")


def test_padding_and_eos_around_the_text_are_ignored():
    # left padding with Qwen's pad token, EOS appended by the pipeline
    text = "<|endoftext|><|endoftext|>" + CASES["chatml_single"][0] + "<|endoftext|>"
    assert parse_templated(text) == SINGLE


def test_right_padding_closes_an_open_turn():
    text = OPEN["llama3"] + "<|finetune_right_pad_id|>" * 3
    assert parse_templated(text) == SINGLE
    assert parse_templated(OPEN["mistral"] + "<unk><unk>") == SINGLE


def test_whitespace_at_the_ends_of_a_content_goes_and_inner_whitespace_stays():
    text = (
        "<|im_start|>user\n  indented\n\nline<|im_end|>\n"
        "<|im_start|>assistant\ndef f():\n    return 1\n<|im_end|>"
    )
    assert parse_templated(text) == ((), "indented\n\nline", "def f():\n    return 1")


def test_markup_quoted_inside_a_message_does_not_change_the_template():
    chatml = (
        "<|im_start|>user\nWhat does [INST] Hi [/INST] mean?<|im_end|>\n"
        "<|im_start|>assistant\nIt wraps a user turn: [INST] ... [/INST]</s><|im_end|>"
    )
    assert parse_templated(chatml) == (
        (),
        "What does [INST] Hi [/INST] mean?",
        "It wraps a user turn: [INST] ... [/INST]</s>",
    )
    mistral = "<s>[INST] What is <|im_start|>? [/INST] A ChatML marker.</s>"
    assert parse_templated(mistral) == ((), "What is <|im_start|>?", "A ChatML marker.")


def test_phi3_and_zephyr_are_told_apart_by_the_token_closing_the_first_turn():
    # the same content; only the end token differs, and it stays in the other's content
    assert parse_templated("<|user|>\nA</s><|end|>\n<|assistant|>\nB<|end|>") == ((), "A</s>", "B")
    assert parse_templated("<|user|>\nA</s>\n<|assistant|>\nB</s>") == ((), "A", "B")


@pytest.mark.parametrize(
    "text",
    [
        "Hi. Hello! How can I help?",
        "User: Hi\nAssistant: Hello!",
        "",
        # markup that does not open the text
        "Answer this: <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!",
    ],
)
def test_text_no_template_opens_is_not_parsed(text):
    assert parse_templated(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "<|im_start|>user\nHi<|im_end|>\n",  # no assistant turn
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>assistant\nOK<|im_end|>",
        "<|im_start|>assistant\nOK<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    ],
)
def test_a_conversation_not_ending_in_a_reply_to_a_user_is_not_parsed(text):
    assert parse_templated(text) is None


def test_turns_between_the_prompt_and_the_response_are_dropped():
    text = (
        "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<tool_call><|im_end|>\n"
        "<|im_start|>tool\nSunny<|im_end|>\n<|im_start|>assistant\nIt is sunny.<|im_end|>"
    )
    assert parse_templated(text) == ((), "Weather?", "It is sunny.")


def test_the_prompt_fixes_where_the_response_starts():
    prompt = "<s>[INST] Show a Mistral prompt. [/INST]"
    text = prompt + " Like this: [INST] Hi [/INST]</s>"
    # from the markup alone, the policy's quoted [INST] reads as a new user turn
    assert parse_templated(text) == (
        (("user", "Show a Mistral prompt."), ("assistant", "Like this:")),
        "Hi",
        "",
    )
    assert parse_templated(text, prompt) == (
        (),
        "Show a Mistral prompt.",
        "Like this: [INST] Hi [/INST]",
    )


def test_the_prompt_is_compared_without_padding_and_may_hold_the_history():
    prompt = (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    )
    text = "<|endoftext|>" + prompt + "Blue.<|im_end|>\n<|im_start|>user\nMore?<|im_end|>"
    assert parse_templated(text, prompt) == MULTI_NO_SYSTEM
    assert parse_templated(text) is None  # the policy ran on into a user turn of its own


@pytest.mark.parametrize(
    "prompt",
    [
        "Hi",  # plain, not templated
        "<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n",  # not a prefix
        "<|im_start|>user\nHi<|im_end|>\n",  # no open assistant turn
    ],
)
def test_a_prompt_that_does_not_fit_is_ignored(prompt):
    assert parse_templated(CASES["chatml_single"][0], prompt) == SINGLE


def test_strip_special_tokens_strips_runs_at_both_ends_only():
    text = "<pad><pad> <s>Hi </s> there</s>\n</s>"
    assert strip_special_tokens(text, ["<pad>", "<s>", "</s>"]) == "Hi </s> there"
    assert strip_special_tokens("  Hi  ", []) == "Hi"
    assert strip_special_tokens("<pad>", ["<pad>", ""]) == ""
