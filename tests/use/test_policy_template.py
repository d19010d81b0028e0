"""``mrm serve --policy-tokenizer``: a policy's own chat template, learnt by example
(:mod:`mrm_lightning.use.policy_template`). Tokenizer folders are made here, offline: the tiny
BERT's WordPiece vocabulary with a chat template and special tokens set."""

from __future__ import annotations

import pytest

from mrm_lightning.cli import main
from mrm_lightning.use.inference import PersonalizedRewardModel
from mrm_lightning.use.policy_template import (
    PROBE,
    PROBE_WITH_SYSTEM,
    REPLY1,
    REPLY2,
    SYSTEM,
    USER1,
    USER2,
    TemplateMarkup,
    load_policy_template,
)
from mrm_lightning.use.request_bodies import item_of
from mrm_lightning.use.server import create_app
from tests.cli.test_use_cli import text_model  # noqa: F401 (the module-scoped fixture)
from tests.use.test_server import call, serving_in_a_thread

# ---- the markup learnt from rendered strings, by hand (no tokenizer) ----------------------

# A Vicuna-like template no built-in knows: a default system prompt when none is given.
DEFAULT = "A chat between a curious user and an assistant.\n\n"
VICUNA_RENDERS = {
    "plain": f"{DEFAULT}### Human: {USER1}\n### Assistant: {REPLY1}</s>\n"
    f"### Human: {USER2}\n### Assistant: {REPLY2}</s>\n",
    "generation": f"{DEFAULT}### Human: {USER1}\n### Assistant: {REPLY1}</s>\n"
    f"### Human: {USER2}\n### Assistant:",
    "with_system": f"{SYSTEM}\n\n### Human: {USER1}\n### Assistant: {REPLY1}</s>\n"
    f"### Human: {USER2}\n### Assistant: {REPLY2}</s>\n",
}
VICUNA = TemplateMarkup.from_renders(**VICUNA_RENDERS, boundary_tokens=("<s>", "</s>", "<unk>"))


def test_the_markup_is_the_text_around_the_probe_contents():
    assert VICUNA == TemplateMarkup(
        opening=f"{DEFAULT}### Human: ",
        user_to_reply="\n### Assistant: ",
        reply_to_user="</s>\n### Human: ",
        close="</s>\n",
        final_user_to_reply="\n### Assistant: ",
        generation="\n### Assistant:",
        system_opening="",
        system_to_user="\n\n### Human: ",
        boundary_tokens=("<s>", "</s>", "<unk>"),
    )


def test_multi_turn_with_a_system_message_and_trailing_eos_and_padding():
    query = (
        "<unk><unk>Be brief.\n\n### Human: explain clouds\n### Assistant: water</s>\n"
        "### Human: name a cat\n### Assistant: tom\n\n</s><unk><unk>"
    )
    history = (("system", "Be brief."), ("user", "explain clouds"), ("assistant", "water"))
    assert VICUNA.parse(query) == (history, "name a cat", "tom")


def test_the_default_system_prompt_is_markup_not_a_system_message():
    query = f"{DEFAULT}### Human: explain clouds\n### Assistant: water</s>"
    assert VICUNA.parse(query) == ((), "explain clouds", "water")


def test_the_reply_loses_the_close_or_the_part_of_it_the_policy_wrote():
    markup = TemplateMarkup(
        opening="<|user|>", user_to_reply="<|end|><|bot|>", reply_to_user="<|end|><|user|>",
        close="<|end|>\n<|stop|>",
    )  # fmt: skip
    for tail in ("", "<|end|>", "<|end|>\n", "<|end|>\n<|stop|>"):
        assert markup.parse(f"<|user|>hi<|end|><|bot|> a < b {tail}") == ((), "hi", "a < b")


def test_with_the_prompt_the_reply_is_what_follows_it_up_to_its_end_token():
    prompt = f"{DEFAULT}### Human: explain clouds\n### Assistant:"
    query = prompt + " water</s>\n### Human: and rain?\n### Assistant: no</s>"
    assert VICUNA.parse(query, prompt) == ((), "explain clouds", "water")
    assert VICUNA.parse(query)[1:] == ("and rain?", "no")  # without it, the last exchange


def test_bos_is_optional_and_decoded_spacing_does_not_matter():
    markup = TemplateMarkup.from_renders(
        plain=f"<s>[INST] {USER1} [/INST]{REPLY1}</s>[INST] {USER2} [/INST]{REPLY2}</s>",
        generation=f"<s>[INST] {USER1} [/INST]{REPLY1}</s>[INST] {USER2} [/INST]",
        boundary_tokens=("<s>", "</s>"),
    )
    for query in ("<s>[INST] hi [/INST]hello</s>", "<s> [INST] hi [/INST] hello</s>",
                  "[INST]hi[/INST]hello"):  # fmt: skip
        assert markup.parse(query) == ((), "hi", "hello"), query


def test_the_more_specific_opening_is_tried_first():
    # Llama 2: the system block opens like a user turn, then says more
    turns = f"{USER1} [/INST] {REPLY1} </s><s>[INST] {USER2} [/INST]"
    markup = TemplateMarkup.from_renders(
        plain=f"<s>[INST] {turns} {REPLY2} </s>",
        generation=f"<s>[INST] {turns}",
        with_system=f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{turns} {REPLY2} </s>",
        boundary_tokens=("<s>", "</s>"),
    )
    query = "<s>[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nhi [/INST] hello </s>"
    assert markup.parse(query) == ((("system", "be brief"),), "hi", "hello")
    assert markup.parse("<s>[INST] hi [/INST] hello </s>") == ((), "hi", "hello")


def test_a_query_the_template_does_not_render_is_none():
    for query in (
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>",  # ChatML
        f"{DEFAULT}### Human: explain clouds",  # no reply
        "plain text",
    ):
        assert VICUNA.parse(query) is None, query


def test_a_system_message_placed_elsewhere_is_no_system_turn():
    # Gemma 3 folds it into the first user turn: nothing marks where it ends
    turn = "<start_of_turn>{}\n{}<end_of_turn>\n"
    plain = "".join(turn.format(r, c) for r, c in zip("user model user model".split(),
                                                       (USER1, REPLY1, USER2, REPLY2)))  # fmt: skip
    folded = plain.replace(USER1, f"{SYSTEM}\n\n{USER1}")
    generation = plain[: plain.index(REPLY2)]
    assert TemplateMarkup.from_renders(plain, generation, folded).system_opening is None
    # Mistral v3 puts it in the last user turn
    out_of_order = plain.replace(USER2, f"{SYSTEM}\n\n{USER2}")
    assert TemplateMarkup.from_renders(plain, generation, out_of_order).system_opening is None


def test_a_template_whose_turns_cannot_be_told_apart_is_refused():
    with pytest.raises(ValueError, match="only whitespace"):
        TemplateMarkup.from_renders(f"{USER1}\n{REPLY1}\n{USER2}\n{REPLY2}", f"{USER1}\n"
                                    f"{REPLY1}\n{USER2}\n")  # fmt: skip


# ---- tokenizer folders: each template as jinja, rendered by transformers ----------------

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# Mistral v0.3: the system message goes into the LAST user turn
MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}"
    "{%- endif %}{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}{%- else %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- endif %}{%- endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + "
    "message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
VICUNA_JINJA = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
    "{% set loop_messages = messages[1:] %}{% else %}{{ '" + DEFAULT.replace("\n", "\\n") + "' }}"
    "{% set loop_messages = messages %}{% endif %}{% for m in loop_messages %}"
    "{% if m['role'] == 'user' %}{{ '### Human: ' + m['content'] + '\\n' }}"
    "{% else %}{{ '### Assistant: ' + m['content'] + eos_token + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:' }}{% endif %}"
)
# name: (jinja, special tokens, whether it has a system turn of its own)
TEMPLATES = {
    "chatml": (CHATML, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, True),
    "llama3": (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, True),
    "mistral": (MISTRAL, {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<unk>"}, False),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}, False),
    "vicuna": (VICUNA_JINJA, {"bos_token": "<s>", "eos_token": "</s>"}, True),
}


def tokenizer_folder(folder, jinja: str | None, special: dict):
    """A tokenizer folder: the tiny BERT's vocabulary, ``special`` tokens, ``jinja``."""
    from transformers import BertTokenizerFast

    from tests.tiny_encoder import VOCAB

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))  # positional: see tiny_encoder
    tokenizer.add_special_tokens(special)
    tokenizer.chat_template = jinja
    tokenizer.save_pretrained(str(folder))
    return tokenizer


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """{name: (tokenizer, its folder)} for each of :data:`TEMPLATES`."""
    root = tmp_path_factory.mktemp("policies")
    return {
        name: (tokenizer_folder(root / name, jinja, special), root / name)
        for name, (jinja, special, _) in TEMPLATES.items()
    }


PLAIN = ((("user", "explain clouds"), ("assistant", "water in the air")), "name a cat", "tom")
SYSTEM_PLAIN = ((("system", "be brief."), *PLAIN[0]), *PLAIN[1:])


def templated(tokenizer, plain) -> tuple[str, str]:
    """(query, prompt) as a policy's pipeline has them: the prompt rendered with its
    generation prompt, the query that prompt with the decoded reply and EOS."""
    history, prompt, response = plain
    messages = [{"role": r, "content": c} for r, c in (*history, ("user", prompt))]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return rendered + response + tokenizer.eos_token, rendered


def conversations(name: str) -> list:
    return [PLAIN, SYSTEM_PLAIN] if TEMPLATES[name][2] else [PLAIN]


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_policy_template_is_learnt_from_its_tokenizer(name, policies):
    tokenizer, folder = policies[name]
    markup = load_policy_template(folder)
    assert (markup.system_opening is not None) == TEMPLATES[name][2]
    for plain in conversations(name):
        query, prompt = templated(tokenizer, plain)
        assert markup.parse(query) == plain
        assert markup.parse(query, prompt) == plain
        assert item_of(query, prompt, markup) == plain


def test_templated_queries_score_as_plain_through_the_server(policies, text_model, tmp_path):  # noqa: F811
    model = PersonalizedRewardModel.from_checkpoint(text_model[0], device="cpu")
    for name, (tokenizer, folder) in policies.items():
        plain = conversations(name)
        expected = model.score_items(plain, [None] * len(plain))
        pairs = [templated(tokenizer, p) for p in plain]
        body = {
            "query": [q for q, _ in pairs] * 2,
            "prompts": [p for _, p in pairs] + [""] * len(pairs),
        }
        app = create_app(model, tmp_path / "p.db", policy_template=load_policy_template(folder))
        with serving_in_a_thread(app) as base:
            status, answer = call(base, "/get_reward", body)
        assert status == 200, answer
        assert answer["rewards"] == pytest.approx(expected * 2, abs=1e-5), name
        if name == "vicuna":  # no built-in template knows it: without the tokenizer, it differs
            with serving_in_a_thread(create_app(model, tmp_path / "p.db")) as base:
                status, answer = call(base, "/get_reward", body)
            assert status == 200, answer
            worst = max(abs(a - b) for a, b in zip(answer["rewards"], expected * 2))
            assert worst > 1e-3


def test_a_folder_without_a_chat_template_is_refused_naming_it(tmp_path):
    tokenizer_folder(tmp_path / "bert", None, {})
    with pytest.raises(ValueError, match=f"{tmp_path / 'bert'}: the tokenizer has no chat_templ"):
        load_policy_template(tmp_path / "bert")


def test_a_bad_policy_tokenizer_ends_serve_with_one_error_line(tmp_path, capsys):
    """Before the checkpoint is read (it does not exist here)."""
    args = ["--ckpt", str(tmp_path / "none.ckpt"), "--store", str(tmp_path / "s.db")]
    (tmp_path / "empty").mkdir()
    for folder, message in [
        ("/nonexistent", "/nonexistent: no such tokenizer folder (--policy-tokenizer)"),
        (str(tmp_path / "empty"), f"{tmp_path / 'empty'}: not a tokenizer folder ("),
    ]:
        with pytest.raises(SystemExit) as stop:
            main(["serve", *args, "--policy-tokenizer", folder])
        assert stop.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mrm: error: {message}")


def test_probes_are_distinct_and_none_inside_another():
    contents = [m["content"] for m in PROBE_WITH_SYSTEM]
    assert PROBE == PROBE_WITH_SYSTEM[1:]
    assert all(a not in b for a in contents for b in contents if a is not b)
