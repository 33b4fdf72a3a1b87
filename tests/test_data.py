import pytest
import torch
from tiny import tiny_mirror

from structprune.data.tasks import read_task_records
from structprune.data.text import DataSourceError, load_text, sample_windows, tokenize_text


def test_sample_windows_is_seeded_and_inside_the_stream():
    stream = torch.arange(1000)
    a = sample_windows(stream, 8, 32, seed=3)
    assert a.shape == (8, 32)
    torch.testing.assert_close(a, sample_windows(stream, 8, 32, seed=3))
    assert not torch.equal(a, sample_windows(stream, 8, 32, seed=4))
    assert torch.all(a[:, 1:] - a[:, :-1] == 1)  # contiguous windows
    with pytest.raises(ValueError, match="fewer than one window"):
        sample_windows(torch.arange(10), 1, 32, seed=0)


def test_mirror_rows_are_joined_like_the_reference_code(tmp_path):
    (tmp_path / "text" / "wikitext2").mkdir(parents=True)
    (tmp_path / "text" / "wikitext2" / "test.txt").write_text(" = A = \n\n b c \n")
    (tmp_path / "text" / "ptb").mkdir(parents=True)
    (tmp_path / "text" / "ptb" / "test.txt").write_text(" a b \n c d \n")
    assert load_text("wikitext2", "test", tmp_path) == " = A = \n\n\n\n\n b c \n"
    assert load_text("ptb", "test", tmp_path) == "a b\n\nc d"


def test_missing_split_names_the_dataset_and_the_fix(tmp_path):
    tiny_mirror(tmp_path)
    with pytest.raises(DataSourceError, match=r"'wikitext2' split 'train' is not in the mirror.*splits there"):
        load_text("wikitext2", "train", tmp_path)
    with pytest.raises(DataSourceError, match="'boolq' is not in the mirror"):
        read_task_records("boolq", tmp_path)


def test_hub_failure_explains_the_mirror(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataSourceError, match="STRUCTPRUNE_DATA_MIRROR"):
        load_text("ptb", "test", None)


def test_tokenize_text_is_one_call_with_default_special_tokens(tokenizer):
    ids = tokenize_text(tokenizer, "The quick brown fox")
    assert ids.tolist() == tokenizer("The quick brown fox")["input_ids"]
    assert tokenizer.decode(ids) == "The quick brown fox"


def test_hellaswag_preprocessed_records_get_the_builtin_fields(tmp_path):
    path = tmp_path / "tasks" / "hellaswag"
    path.mkdir(parents=True)
    record = {"activity_label": "Roof", "ctx_preprocessed": "A man is on a roof. he", "endings": ["a", "b", "c", "d"], "label": 3}
    (path / "validation.preprocessed.jsonl").write_text(__import__("json").dumps(record) + "\n")
    (adapted,) = read_task_records("hellaswag", tmp_path)
    assert adapted["ctx_a"] == "A man is on a roof. he" and adapted["ctx_b"] == "" and adapted["label"] == "3"
