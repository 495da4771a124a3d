"""Reading rows for score/eval: places for error messages, JSON lines in .json, CSV cells, folders."""

import json

import pytest

from rewardbridge.errors import ConfigError, InputError
from rewardbridge.jobs.rows import count_rows, read_rows


def test_jsonl_places_are_line_numbers_and_blank_lines_are_not_rows(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n{"a": \n')
    rows = list(read_rows(str(path)))
    assert [(r.index, r.where) for r in rows] == [(0, "line 1"), (1, "line 3"), (2, "line 4")]
    assert rows[0].data == {"a": 1} and "must be a JSON object, got list" in rows[1].error
    assert "not valid JSON" in rows[2].error and rows[2].raw == '{"a": '
    assert count_rows(str(path)) == 3


def test_a_key_given_twice_in_a_row_is_a_bad_row_not_the_last_value(tmp_path):
    # Hostile check: {"prompt": "a", ..., "prompt": "zzz"} was scored as "zzz" without a word.
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "a", "completion": "b", "prompt": "zzz"}\n{"prompt": "a", "meta": {"k": 1, "k": 2}}\n'
                    '{"prompt": "a", "completion": "b"}\n')
    rows = list(read_rows(str(path)))
    assert rows[0].data is None and "the key 'prompt' is given twice" in rows[0].error and rows[0].where == "line 1"
    assert rows[1].data is None and "the key 'k' is given twice" in rows[1].error
    assert rows[2].data == {"prompt": "a", "completion": "b"}


def test_row_identity_is_place_and_content(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"x": 1}\n{"x": 2}\n')
    b.write_text('{"x": 1}\n{"x": 3}\n')
    ids_a, ids_b = [r.row_id for r in read_rows(str(a))], [r.row_id for r in read_rows(str(b))]
    assert ids_a[0] == ids_b[0] and ids_a[1] != ids_b[1]  # same content at the same place, same id
    assert ids_a[0].startswith("0:") and ids_a[1].startswith("1:")


def test_json_accepts_a_list_or_json_lines(tmp_path):
    listed, lines = tmp_path / "l.json", tmp_path / "j.json"
    listed.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    lines.write_text('{"a": 1}\n{"a": 2}\n')  # what datasets' to_json writes
    assert [r.data for r in read_rows(str(listed))] == [r.data for r in read_rows(str(lines))] == [{"a": 1}, {"a": 2}]
    assert [r.where for r in read_rows(str(listed))] == ["row 1", "row 2"]


def test_csv_lines_and_json_cells(tmp_path):
    path = tmp_path / "r.csv"
    messages = [{"role": "user", "content": "hi"}]
    path.write_text('prompt,completion\n"multi\nline",x\n' + '"' + json.dumps(messages).replace('"', '""') + '",y\n' + "short\n")
    rows = list(read_rows(str(path)))
    assert [r.where for r in rows] == ["line 2", "line 4", "line 5"]  # a quoted newline spans lines 2-3
    assert rows[0].data == {"prompt": "multi\nline", "completion": "x"}
    assert rows[1].data["prompt"] == messages  # chat messages written as JSON text
    assert "different number of cells" in rows[2].error


def test_folders_and_files_that_cannot_be_read(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"a": 1}])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match=r"several splits \['train'\]; pass one split's folder"):
        list(read_rows(str(tmp_path / "dd")))
    assert [r.data for r in read_rows(str(tmp_path / "dd" / "train"))] == [{"a": 1}]
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ConfigError, match="unknown file type '.txt'"):
        list(read_rows(str(tmp_path / "x.txt")))
    with pytest.raises(InputError, match="no such file"):
        list(read_rows(str(tmp_path / "missing.jsonl")))


def test_a_csv_cell_holding_a_python_repr_is_refused_and_text_with_a_bracket_is_kept(tmp_path):
    import pandas as pd

    messages = [{"role": "user", "content": "What is 2+2?"}]
    path = tmp_path / "pandas.csv"
    # What pandas writes for a list of dicts: its Python repr, single quotes and all.
    pd.DataFrame({"prompt": [messages, "[INST] plain text [/INST]", json.dumps(messages)], "completion": ["4", "4", "4"]}).to_csv(path, index=False)
    repr_row, text_row, json_row = read_rows(str(path))
    assert repr_row.data is None and "column 'prompt' holds a Python repr" in repr_row.error and "json.dumps" in repr_row.error
    assert text_row.data["prompt"] == "[INST] plain text [/INST]"  # text that starts with a bracket stays text
    assert json_row.data["prompt"] == messages


@pytest.mark.parametrize("files, words", [
    ({"config.json": "{}"}, ["is a model folder (it has config.json), not data", "other way round"]),
    ({"notes.txt": "x"}, ["is a folder but not one datasets' save_to_disk wrote", ".jsonl"]),
], ids=["model-folder", "other-folder"])
def test_a_folder_that_is_not_a_dataset_is_named_as_such(tmp_path, files, words):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        count_rows(str(tmp_path))
    for word in words:
        assert word in str(caught.value)


# -- how files are written in the wild (issue 15 review 14, 16) ------------------------------------

ROW = {"prompt": "What is 2+2?", "completion": "4"}


# (id, file name, bytes, the rows read)
WRITTEN = [
    ("jsonl-bom", "r.jsonl", b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n", [ROW]),  # Notepad's UTF-8
    ("json-bom", "r.json", b"\xef\xbb\xbf" + json.dumps([ROW]).encode(), [ROW]),
    ("csv-bom", "r.csv", b"\xef\xbb\xbfprompt,completion\nWhat is 2+2?,4\n", [ROW]),  # Excel's "CSV UTF-8"
    ("csv-semicolons", "r.csv", b"prompt;completion\nWhat is 2+2?;4\n", [ROW]),  # Excel in many locales
    ("csv-tabs", "r.csv", b"prompt\tcompletion\nWhat is 2+2?\t4\n", [ROW]),
    ("jsonl-crlf", "r.jsonl", json.dumps(ROW).encode() + b"\r\n", [ROW]),
]


@pytest.mark.parametrize("name, content, rows", [w[1:] for w in WRITTEN], ids=[w[0] for w in WRITTEN])
def test_files_as_editors_write_them_read_as_their_rows(tmp_path, name, content, rows):
    path = tmp_path / name
    path.write_bytes(content)
    assert [r.data for r in read_rows(str(path))] == rows  # before: a '\ufeffprompt' column, or one 'prompt;completion' column


def test_a_line_that_is_not_utf8_is_named_by_its_line(tmp_path):
    cp1252 = "Caf\u00e9 \u201cquoted\u201d".encode("cp1252")
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_bytes(json.dumps(ROW).encode() + b"\n" + b'{"prompt": "' + cp1252 + b'", "completion": "x"}\n')
    first, second = read_rows(str(jsonl))  # before: a UnicodeDecodeError with no line, before any row
    assert first.data == ROW and second.where == "line 2" and "is not UTF-8 text (byte 0xe9 at column 16)" in second.error
    csv_file = tmp_path / "r.csv"
    csv_file.write_bytes(b"prompt,completion\n" + cp1252 + b",x\n")
    with pytest.raises(InputError, match=r"r.csv line 2 is not UTF-8 text .*iconv -f cp1252"):
        list(read_rows(str(csv_file)))


def test_a_csv_header_that_names_a_column_twice_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("prompt,completion,prompt\nQ?,A.,other\n")  # DictReader kept the last 'prompt' without a word
    with pytest.raises(InputError, match=r"the header names the column 'prompt' twice \(columns \[1, 3\]\)"):
        list(read_rows(str(path)))
