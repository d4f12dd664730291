"""How messages spell a setting: flags for the command line, keywords in Python."""

from __future__ import annotations

import pytest

from driftline.offline.options import option, python_spelling


def test_flags_by_default_and_keywords_inside_python_spelling() -> None:
    cases = [
        # (flag, value, command line, Python)
        ("scores", "CLASS=COLUMN", "--scores CLASS=COLUMN", "scores={'CLASS': 'COLUMN'}"),
        ("labels-columns", "id=a,label=b", "--labels-columns id=a,label=b",
         "label_columns={'id': 'a', 'label': 'b'}"),
        # quoted as a shell needs (a name or a time layout with a space)
        ("exclude", "Unnamed: 0", "--exclude 'Unnamed: 0'", "exclude=['Unnamed: 0']"),
        ("time-format", "%d.%m.%Y %H:%M", "--time-format '%d.%m.%Y %H:%M'",
         "time_format='%d.%m.%Y %H:%M'"),
        ("features", "", "--features", "features=[...]"),
        ("on-bad-value", "dlq", "--on-bad-value dlq", "on_bad_value='dlq'"),
        ("model", "MODEL", "--model MODEL", "model_id='MODEL'"),
        ("label", "", "--label", "label"),
        ("types", "income=categorical", "--types income=categorical",
         "types={'income': 'categorical'}"),
    ]  # fmt: skip
    for flag, value, cli, python in cases:
        assert option(flag, value) == cli
        with python_spelling():
            assert option(flag, value) == python


def test_the_spelling_ends_with_its_block_even_on_an_error() -> None:
    with pytest.raises(ValueError), python_spelling():
        raise ValueError("boom")
    assert option("task", "classification") == "--task classification"
