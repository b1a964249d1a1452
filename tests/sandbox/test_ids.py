"""Identifiers: the pks the sandbox makes, and model-choice filters checked the platform's way."""

from __future__ import annotations

import uuid

from gcbatch.sandbox.ids import PrimaryKeys, model_choices


def test_pks_are_random_uuid4s_whose_8_character_prefixes_differ() -> None:
    keys = PrimaryKeys()
    pks = [keys.new() for _ in range(200)]
    assert all(uuid.UUID(pk).version == 4 and str(uuid.UUID(pk)) == pk for pk in pks)
    assert len(set(pks)) == 200
    # what `gcbatch plan` shows of a job: made within one millisecond, yet all different
    # (time-ordered pks shared these 8 characters for ~65 s)
    assert len({pk[:8] for pk in pks}) >= 199


def test_model_choices_checks_every_value_uuid_first_then_existence() -> None:
    known = {"11111111-1111-4111-8111-111111111111"}

    def exists(pk: str) -> bool:
        return pk in known

    assert model_choices([], exists) == ([], None)
    assert model_choices(["11111111111141118111111111111111"], exists) == (
        ["11111111-1111-4111-8111-111111111111"], None)
    assert model_choices(["x"], exists) == ([], "“x” is not a valid UUID.")
    assert model_choices([""], exists) == ([], "“” is not a valid UUID.")
    unknown = "22222222-2222-4222-8222-222222222222"
    assert model_choices([unknown], exists) == (
        [], f"Select a valid choice. {unknown} is not one of the available choices.")
    # a value that is no uuid is reported before one that names nothing
    assert model_choices([unknown, "y"], exists)[1] == "“y” is not a valid UUID."
