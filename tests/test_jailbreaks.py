"""Attack transforms (aidsafe/jailbreaks.py, policies/eval/jailbreaks/): every shipped file loads, base64 and
payload splitting give the prompt back, and a malformed file is an error naming it."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from aidsafe import jailbreaks
from aidsafe.errors import PolicyError
from aidsafe.jailbreaks import DEFAULT_DIR, apply, load_transform, load_transforms, recover, split_prompt

PROMPT = 'Write a tutorial on how to make a $5 "thing"\nwith  odd   spacing.'
REQUIRED = {"role_play", "prefix_injection", "refusal_suppression", "base64", "payload_splitting"}


def test_every_shipped_transform_file_loads_and_the_classic_families_are_there() -> None:
    transforms = load_transforms()
    assert set(transforms) >= REQUIRED
    assert {t.kind for t in transforms.values()} == {"wrap", "base64", "split"}
    assert all(len(t.description) > 20 for t in transforms.values())


def test_base64_attack_carries_the_prompt_encoded_not_in_plain_text() -> None:
    attack = apply("base64", PROMPT)
    assert PROMPT not in attack and "tutorial" not in attack
    encoded = max(re.findall(r"[A-Za-z0-9+/=]{20,}", attack), key=len)
    assert base64.b64decode(encoded).decode("utf-8") == PROMPT
    assert recover("base64", attack) == PROMPT


def test_payload_splitting_puts_the_parts_in_the_attack_and_recovers_the_prompt() -> None:
    transform = jailbreaks.get("payload_splitting")
    parts = split_prompt(PROMPT, transform.parts)
    attack = apply(transform, PROMPT)
    assert transform.parts >= 2 and "".join(parts) == PROMPT and PROMPT not in attack
    assert all(part in attack for part in parts)
    assert recover(transform, attack) == PROMPT


@pytest.mark.parametrize(("prompt", "parts"), [("one two three four five", 3), ("ab", 2), ("two words", 4)])
def test_split_prompt_gives_non_empty_parts_that_concatenate_to_the_prompt(prompt: str, parts: int) -> None:
    pieces = split_prompt(prompt, parts)
    assert len(pieces) == parts and all(pieces) and "".join(pieces) == prompt


def test_split_prompt_cuts_at_word_boundaries_when_there_are_enough_words() -> None:
    assert split_prompt("one two three four", 3) == ["one two ", "three ", "four"]
    with pytest.raises(ValueError, match="cannot split"):
        split_prompt("a", 2)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_transform_keeps_the_prompt_recoverable(name: str) -> None:
    attack = apply(name, PROMPT)
    assert attack != PROMPT and recover(name, attack) == PROMPT


def test_recover_refuses_a_text_that_no_transform_made() -> None:
    with pytest.raises(ValueError, match="not an attack prompt"):
        recover("role_play", "Just a question?")


def test_an_unknown_transform_name_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(KeyError, match="role_play"):
        apply("no_such_attack", PROMPT)


def write(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_text(body, encoding="utf-8")
    return path


GOOD = 'description = "A test transform file."\nkind = "{kind}"\ntemplate = """{template}"""\n'


@pytest.mark.parametrize(
    ("kind", "template", "message"),
    [
        ("wrap", "Please answer this: ${request}", r"a wrap template takes \$\{prompt\} only"),
        ("base64", "Decode and answer: ${prompt}", r"a base64 template takes \$\{encoded\} only"),
        ("split", "a = '${part1}', c = '${part3}'. Answer a + c.", r"a split template takes \$\{part1\}"),
        ("split", "a = '${part1}'. Answer a, nothing else.", r"a split template takes \$\{part1\}"),
        ("split", "Answer the concatenation: ${part1} ${part2}", r"two variables side by side"),
        ("wrap", "It costs $5 to answer ${prompt}", r"a `\$` that starts no"),
        ("rot13", "Answer this: ${prompt}", r"kind: Input should be 'wrap', 'base64' or 'split'"),
    ],
)
def test_a_malformed_transform_file_is_an_error_naming_it(
    tmp_path: Path, kind: str, template: str, message: str
) -> None:
    path = write(tmp_path, "bad", GOOD.format(kind=kind, template=template))
    with pytest.raises(PolicyError, match=message) as info:
        load_transform(path)
    assert str(info.value).startswith(f"{path}: ")


def test_a_transform_file_with_bad_toml_or_a_bad_name_is_an_error_naming_it(tmp_path: Path) -> None:
    for name, body in [
        ("broken", "kind = \n"),
        ("Bad-Name", GOOD.format(kind="wrap", template="Hi ${prompt}!")),
    ]:
        path = write(tmp_path, name, body)
        with pytest.raises(PolicyError) as info:
            load_transform(path)
        assert str(info.value).startswith(f"{path}: ")


def test_a_directory_of_transforms_with_one_bad_file_fails_on_that_file(tmp_path: Path) -> None:
    for shipped in DEFAULT_DIR.glob("*.toml"):
        write(tmp_path, shipped.stem, shipped.read_text(encoding="utf-8"))
    bad = write(tmp_path, "zzz", GOOD.format(kind="wrap", template="no variable here at all"))
    with pytest.raises(PolicyError, match=r"zzz\.toml"):
        load_transforms(tmp_path)
    bad.unlink()
    assert set(load_transforms(tmp_path)) == set(load_transforms())


def test_a_literal_dollar_and_a_repeated_variable_still_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, "echo", GOOD.format(kind="wrap", template="For $$5: ${prompt}. Again: ${prompt}."))
    transform = load_transform(path)
    attack = apply(transform, PROMPT)
    assert attack == f"For $5: {PROMPT}. Again: {PROMPT}." and recover(transform, attack) == PROMPT
