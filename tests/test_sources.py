"""Data readers (JSONL, Parquet, a folder of .txt files, a `datasets` folder) and record formatting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from distill.data.formatting import (
    IGNORE_INDEX,
    detect_format,
    encode_messages,
    encode_prompt_completion,
    encode_text,
)
from distill.data.sources import read_records
from distill.errors import DataError

TEXTS = [
    "Once upon a time, a small fox found a red ball.",
    "The ball rolled down the hill.\nThe fox ran after it.",
    "Ünïcödé and emoji 🦊 survive the round trip.",
    "  Leading and trailing spaces are kept.  ",
]
TEXT_RECORDS = [{"text": t} for t in TEXTS]
PROMPT_RECORDS = [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(3)]
CHAT_RECORDS = [
    {"messages": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": f"Say {i}."},
                  {"role": "assistant", "content": f"{i}."}]}
    for i in range(3)
]


# ---------------------------------------------------------------------------------------------------- writers


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_text_folder(path: Path, records: list[dict]) -> Path:
    path.mkdir()
    for i, record in enumerate(records):
        (path / f"{i:03d}.txt").write_text(record["text"], encoding="utf-8")
    return path


def write_saved_dataset(path: Path, records: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(path))
    return path


WRITERS = {
    "jsonl": lambda tmp, records: write_jsonl(tmp / "data.jsonl", records),
    "parquet": lambda tmp, records: write_parquet(tmp / "data.parquet", records),
    "datasets": lambda tmp, records: write_saved_dataset(tmp / "saved", records),
}


# ---------------------------------------------------------------------------------------------------- readers


@pytest.mark.parametrize("kind", [*WRITERS, "txt-folder"])
def test_every_source_gives_the_same_text_records(kind: str, tmp_path: Path) -> None:
    if kind == "txt-folder":
        source = write_text_folder(tmp_path / "texts", TEXT_RECORDS)
    else:
        source = WRITERS[kind](tmp_path, TEXT_RECORDS)
    assert read_records(str(source)) == TEXT_RECORDS


@pytest.mark.parametrize("kind", list(WRITERS))
@pytest.mark.parametrize("records", [PROMPT_RECORDS, CHAT_RECORDS], ids=["prompt_completion", "messages"])
def test_structured_records_round_trip(kind: str, records: list[dict], tmp_path: Path) -> None:
    assert read_records(str(WRITERS[kind](tmp_path, records))) == records


@pytest.mark.parametrize("kind", list(WRITERS))
def test_limit_keeps_the_first_records(kind: str, tmp_path: Path) -> None:
    source = WRITERS[kind](tmp_path, TEXT_RECORDS)
    assert read_records(str(source), limit=2) == TEXT_RECORDS[:2]


def test_text_folder_is_read_recursively_in_path_order(tmp_path: Path) -> None:
    root = tmp_path / "texts"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("first")
    (root / "b" / "c.txt").write_text("second")
    (root / "notes.md").write_text("not text data")
    assert read_records(str(root)) == [{"text": "first"}, {"text": "second"}]


def test_dataset_dict_uses_the_train_split(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(TEXT_RECORDS),
        "test": datasets.Dataset.from_list([{"text": "held out"}]),
    }).save_to_disk(str(folder))
    assert read_records(str(folder)) == TEXT_RECORDS


def test_dataset_dict_without_train_split(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "dict"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(TEXT_RECORDS)}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"data\.train: .*'validation'.*no 'train'"):
        read_records(str(folder))


def test_folder_with_a_train_jsonl(tmp_path: Path) -> None:
    """Built-in data sets are folders holding a train.jsonl; any such folder reads the same way."""
    write_jsonl(tmp_path / "train.jsonl", TEXT_RECORDS)
    assert read_records(str(tmp_path)) == TEXT_RECORDS


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n" + json.dumps(TEXT_RECORDS[0]) + "\n   \n" + json.dumps(TEXT_RECORDS[1]) + "\n\n")
    assert read_records(str(path)) == TEXT_RECORDS[:2]


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps(TEXT_RECORDS[0]), "", json.dumps(TEXT_RECORDS[1]), '{"text": "unterminated}']
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_records(str(path), field="data.train")
    message = str(info.value)
    assert message.startswith("data.train: ")
    assert str(path) in message and "line 4" in message and "invalid JSON" in message


def test_json_that_is_not_an_object_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(TEXT_RECORDS[0]) + "\n" + json.dumps(["a", "list"]) + "\n")
    with pytest.raises(DataError, match=r"line 2: each line must be a JSON object"):
        read_records(str(path))


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_jsonl_without_records(content: str, tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="holds no records"):
        read_records(str(path))


def test_empty_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], type=pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="holds no records"):
        read_records(str(tmp_path / "empty.parquet"))


def test_empty_saved_dataset(tmp_path: Path) -> None:
    """`datasets` saves 0 rows as 0 shards and cannot load them back; either way it is a DataError, not a crash."""
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": []}).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"^data\.train: .*saved is an empty `datasets` folder .*holds no records"):
        read_records(str(folder))


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train: no such file or folder"):
        read_records(str(tmp_path / "nope.jsonl"))


def test_unsupported_file_type(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("text\nhello\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'.*\.csv"):
        read_records(str(path))
    compressed_parquet = tmp_path / "data.parquet.gz"
    compressed_parquet.write_bytes(b"")
    with pytest.raises(DataError, match=r"unsupported file type '\.parquet\.gz'"):
        read_records(str(compressed_parquet))


def test_folder_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("nothing to read")
    with pytest.raises(DataError, match=r"has no \.txt files"):
        read_records(str(tmp_path))


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="cannot read Parquet file"):
        read_records(str(path))


@pytest.mark.parametrize("kind", [*WRITERS, "txt-folder", "jsonl-with-blank-lines"])
def test_records_know_where_they_came_from(kind: str, tmp_path: Path) -> None:
    """JSONL: the physical line (blank lines count); Parquet and `datasets`: the 1-based row; .txt: the file."""
    if kind == "txt-folder":
        source = write_text_folder(tmp_path / "texts", TEXT_RECORDS)
        expected = [str(source / f"{i:03d}.txt") for i in range(len(TEXT_RECORDS))]
    elif kind == "jsonl-with-blank-lines":
        source = tmp_path / "data.jsonl"
        source.write_text("\n" + json.dumps(TEXT_RECORDS[0]) + "\n\n" + json.dumps(TEXT_RECORDS[1]) + "\n")
        expected = [f"{source}, line 2", f"{source}, line 4"]
    else:
        source = WRITERS[kind](tmp_path, TEXT_RECORDS)
        unit = "line" if kind == "jsonl" else "row"
        expected = [f"{source}, {unit} {i + 1}" for i in range(len(TEXT_RECORDS))]
    records = read_records(str(source))
    assert [records.where(i) for i in range(len(records))] == expected
    limited = read_records(str(source), limit=1)
    assert limited == records[:1] and limited.where(0) == expected[0]


def test_latin1_jsonl_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": "plain"}), json.dumps({"text": "also plain"}),
             json.dumps({"text": "café"}, ensure_ascii=False), json.dumps({"text": "after"})]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_records(str(path))
    message = str(info.value)
    assert message.startswith(f"data.train: {path}, line 3: ")
    assert "utf-8" in message and "data.encoding" in message and "iconv" in message
    records = read_records(str(path), encoding="latin-1")
    assert records[2] == {"text": "café"} and records.where(2) == f"{path}, line 3"


def test_latin1_text_folder_is_an_error_not_replacement_characters(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("plain", encoding="utf-8")
    (folder / "b.txt").write_bytes("first line\nun café".encode("latin-1"))
    records = read_records(str(folder))  # the files are read as their records are
    assert records[0] == {"text": "plain"}
    with pytest.raises(DataError) as info:
        records[1]
    message = str(info.value)
    assert message.startswith(f"data.train: {folder / 'b.txt'}, line 2: ")
    assert "data.encoding" in message and "iconv" in message
    assert read_records(str(folder), encoding="latin-1") == [{"text": "plain"}, {"text": "first line\nun café"}]


def test_utf8_byte_order_mark_is_not_data(tmp_path: Path) -> None:
    """Editors on Windows start UTF-8 files with a BOM; it is not part of the first record."""
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(TEXT_RECORDS[0]) + "\n").encode())
    assert read_records(str(path)) == TEXT_RECORDS[:1]


def test_errors_name_the_given_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^eval\.data: "):
        read_records(str(tmp_path / "nope.jsonl"), field="eval.data")


# ---------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"text": "hi"}, "text"),
        ({"text": "hi", "id": 3}, "text"),
        ({"prompt": "q", "completion": "a"}, "prompt_completion"),
        ({"prompt": "q", "completion": "a", "text": "ignored"}, "prompt_completion"),
        ({"messages": []}, "messages"),
        ({"messages": [], "prompt": "q", "completion": "a", "text": "t"}, "messages"),
    ],
    ids=["text", "text-extra-keys", "prompt_completion", "prompt_completion-over-text", "messages",
         "messages-over-all"],
)
def test_detect_format_auto(record: dict, expected: str) -> None:
    assert detect_format(record, "auto") == expected


@pytest.mark.parametrize("record", [{"prompt": "q"}, {"body": "x"}, {}], ids=["prompt-only", "other-key", "empty"])
def test_detect_format_auto_fails_without_usable_fields(record: dict) -> None:
    with pytest.raises(DataError, match=r"^data\.format: cannot tell the format"):
        detect_format(record, "auto")


def test_declared_format_wins_when_the_record_fits_it() -> None:
    assert detect_format({"body": "x"}, "text", text_field="body") == "text"
    assert detect_format({"text": "x", "prompt": "p", "completion": "c"}, "text") == "text"


def test_declared_format_that_does_not_fit_the_records_names_the_field() -> None:
    with pytest.raises(DataError, match=r"data\.format: format 'messages'.*look like `text`"):
        detect_format({"text": "x"}, "messages")
    with pytest.raises(DataError, match=r"data\.text_field: format 'text'.*look like `prompt_completion`"):
        detect_format({"prompt": "p", "completion": "c"}, "text")


@pytest.fixture(scope="module")
def tokenizer():
    from distill.builtin.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(TEXTS * 20 + ["Question Answer Say Be brief."] * 20, vocab_size=300)


def test_encode_text_ends_each_document_with_eos(tokenizer) -> None:
    ids = encode_text(TEXT_RECORDS[:2], tokenizer, "text")
    assert len(ids) == 2
    for doc, record in zip(ids, TEXT_RECORDS[:2], strict=True):
        assert doc[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(doc[:-1]) == record["text"]


def test_encode_text_missing_field(tokenizer) -> None:
    """Plain lists (no file behind them) name the record 1-based, like everything else a person reads."""
    with pytest.raises(DataError, match=r"data\.text_field: record 2: no string field 'body'"):
        encode_text([{"body": "a"}, {"text": "b"}], tokenizer, "body")


def test_encode_text_missing_field_names_file_and_line(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"body": "b"}) + "\n")
    with pytest.raises(DataError) as info:
        encode_text(read_records(str(path)), tokenizer, "text")
    assert f"data.text_field: {path}, line 3: no string field 'text'" in str(info.value)


def test_prompt_completion_labels_only_the_completion(tokenizer) -> None:
    example = encode_prompt_completion(PROMPT_RECORDS[0], tokenizer, "record 1")
    n_prompt = len(tokenizer(PROMPT_RECORDS[0]["prompt"])["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[n_prompt:-1]) == PROMPT_RECORDS[0]["completion"]


def test_prompt_completion_needs_strings(tokenizer) -> None:
    with pytest.raises(DataError, match=r"^data\.train: d\.jsonl, line 5: needs string 'prompt' and 'completion'"):
        encode_prompt_completion({"prompt": "q", "completion": 3}, tokenizer, "d.jsonl, line 5")


def test_messages_label_only_assistant_turns(tokenizer) -> None:
    example = encode_messages(CHAT_RECORDS[1], tokenizer, "record 2")
    labelled = [tok for tok, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    assert labelled, "the assistant turn must carry labels"
    assert all(label in (IGNORE_INDEX, tok) for tok, label in zip(example.input_ids, example.labels, strict=True))
    text = tokenizer.decode(labelled)
    assert "1." in text
    assert "Say" not in text and "Be brief" not in text and "user" not in text


def test_messages_without_an_assistant_turn(tokenizer) -> None:
    record = {"messages": [{"role": "user", "content": "hello"}]}
    with pytest.raises(DataError, match=r"^data\.train: d\.jsonl, line 2: no assistant turn"):
        encode_messages(record, tokenizer, "d.jsonl, line 2")


def test_messages_must_be_role_content_objects(tokenizer) -> None:
    with pytest.raises(DataError, match=r"d\.jsonl, line 1: 'messages' must be a list of \{role, content\} objects"):
        encode_messages({"messages": [{"role": "user"}]}, tokenizer, "d.jsonl, line 1")


# ---------------------------------------------------------------------------------------------------- laziness


def _traced_peak(fn):
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_jsonl_source_is_read_record_by_record_not_held(tmp_path: Path) -> None:
    """A plain JSONL corpus keeps 16 bytes per record, not the records: renaming columns, holding out a share and
    taking a prefix are views, and each record is parsed when it is read (the first build of the token store then
    holds no more than one block of records)."""
    from distill.data.dataset import split_validation
    from distill.data.normalize import read_training_records
    from distill.recipe.data import DataConfig

    body = "lorem ipsum dolor sit amet " * 80  # ~2 KB a record, 8 MB in all
    rows = [{"id": i, "body": f"{i} {body}"} for i in range(4000)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    cfg = DataConfig(train=str(path), columns={"text": "body"}, validation_fraction=0.1, max_examples=3900)

    (train, held), peak = _traced_peak(lambda: split_validation(read_training_records(cfg), cfg))
    assert peak < path.stat().st_size / 10, f"reading held {peak:,} bytes for a {path.stat().st_size:,}-byte file"
    assert len(train) + len(held) == 3900
    assert len(train) == 3900 - round(3900 * 0.1)
    kept = sorted([r["id"] for r in train] + [r["id"] for r in held])
    assert kept == list(range(3900))  # every record once, renamed, in one of the two parts
    assert train[5] == {"id": train[5]["id"], "text": f"{train[5]['id']} {body}"}
    assert held.where(0) == f"{path}, line {held[0]['id'] + 1}"


def test_parquet_and_datasets_rows_are_read_a_block_at_a_time(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.data.records import ARROW_BLOCK

    rows = [{"text": f"row {i}", "n": i} for i in range(ARROW_BLOCK * 2 + 7)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    for source in (tmp_path / "t.parquet", tmp_path / "ds"):
        records = read_records(str(source))
        assert len(records) == len(rows)
        assert records[ARROW_BLOCK + 3] == rows[ARROW_BLOCK + 3]  # a later block, then back to the first
        assert records[2] == rows[2] and records[-1] == rows[-1]
        assert list(records) == rows
        assert records.where(ARROW_BLOCK) == f"{source}, row {ARROW_BLOCK + 1}"


def test_arrow_rows_read_out_of_order_convert_one_row_each(tmp_path: Path) -> None:
    """A mixture reads a Parquet source in a shuffled order: each such read converts its own row, not a block."""
    import random

    from distill.data.records import ARROW_BLOCK, BlockRows

    rows = [{"n": i} for i in range(ARROW_BLOCK * 3)]
    converted: list[int] = []

    def block(a: int, b: int) -> list[dict]:
        converted.append(b - a)
        return rows[a:b]

    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    shuffled = BlockRows(len(rows), block)
    assert [shuffled[i] for i in order] == [rows[i] for i in order]
    assert sum(converted) < 2 * len(rows)  # at most a block more than the rows read (a 1,024× cliff before)
    converted.clear()
    in_order = BlockRows(len(rows), block)
    assert list(in_order[i] for i in range(len(rows))) == rows
    assert converted == [ARROW_BLOCK] * 3  # in order: a block at a time


def test_a_glob_of_many_jsonl_shards_keeps_few_files_open(tmp_path: Path) -> None:
    import os

    from distill.data import jsonl_lines as records_module

    for i in range(records_module.MAX_OPEN * 3):
        write_jsonl(tmp_path / f"shard-{i:03d}.jsonl", [{"text": f"shard {i}"}])
    before = len(os.listdir("/proc/self/fd"))
    records = read_records(str(tmp_path / "shard-*.jsonl"))
    assert [r["text"] for r in records] == [f"shard {i}" for i in range(records_module.MAX_OPEN * 3)]
    assert len(os.listdir("/proc/self/fd")) - before <= records_module.MAX_OPEN


def test_reading_a_glob_of_parquet_shards_keeps_one_block_not_one_per_shard(tmp_path: Path) -> None:
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    for shard in range(60):
        rows = [{"text": f"{shard}-{i} " + "x" * 1000} for i in range(300)]  # 300 KB of text a shard, 18 MB in all
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"part-{shard:02d}.parquet")
    records = read_records(str(tmp_path / "part-*.parquet"))
    tracemalloc.start()
    try:
        assert sum(1 for _ in records) == 60 * 300
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"{held:,} bytes of records still held after one pass"


def test_a_parquet_source_is_read_from_a_map_not_held_in_memory(tmp_path: Path) -> None:
    """Read whole with pyarrow, these 8 MB of Parquet shards would sit in Arrow's memory pool for as long as their
    records live (every shard of the glob at once). Converted by `datasets` and memory-mapped, they are read from the
    page cache: the pool holds nothing of them, in order or out of order (a mixture's shuffled picks)."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": f"{i} " + "y" * 2000, "n": i} for i in range(4000)]
    for shard in range(2):
        pq.write_table(pa.Table.from_pylist(rows[shard * 2000:(shard + 1) * 2000]), tmp_path / f"p-{shard}.parquet",
                       row_group_size=500)
    before = pa.total_allocated_bytes()
    records = read_records(str(tmp_path / "p-*.parquet"))
    assert [r["n"] for r in records] == list(range(4000))
    order = list(range(4000))
    random.Random(0).shuffle(order)
    assert all(records[i] == rows[i] for i in order[:500])
    assert records.where(2000) == f"{tmp_path / 'p-1.parquet'}, row 1"
    held = pa.total_allocated_bytes() - before
    assert held < 500_000, f"{held:,} bytes of Arrow memory held by the records of an 8 MB source"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_file_name_with_brackets_reads_that_file_not_a_glob_match(tmp_path: Path, suffix: str) -> None:
    """`datasets` takes data_files as glob patterns: unescaped, `s[1].parquet` would read `s1.parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("s[1]", "s1"):
        if suffix == ".parquet":
            pq.write_table(pa.table({"text": [f"I am {name}"]}), tmp_path / f"{name}{suffix}")
        else:
            (tmp_path / f"{name}{suffix}").write_text(f"text\nI am {name}\n")
    assert list(read_records(str(tmp_path / f"s[1]{suffix}"))) == [{"text": "I am s[1]"}]
    (tmp_path / f"s1{suffix}").unlink()  # and with no file the pattern would match
    assert list(read_records(str(tmp_path / f"s[1]{suffix}"))) == [{"text": "I am s[1]"}]


def test_a_parquet_file_whose_first_row_group_is_empty_is_read_mapped(tmp_path: Path, caplog) -> None:
    """`datasets` reads in batches of the first row group's size unless told otherwise: 0 stopped it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "gaps.parquet"
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as writer:
        for rows in ([], ["x", "y"], [], ["z"]):
            writer.write_table(pa.table({"text": pa.array(rows, pa.string())}))
    with caplog.at_level("WARNING"):
        assert [r["text"] for r in read_records(str(path))] == ["x", "y", "z"]
    assert "read whole" not in caplog.text  # mapped, not the fallback


def test_media_columns_of_a_hub_parquet_export_stay_bytes_not_decoded(tmp_path: Path) -> None:
    """Hub exports mark Image and Audio columns in the schema; `datasets` would decode them (an image object per
    record, or an ImportError for audio without its decoder). The records are the data: {bytes, path} dicts."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    media = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for column, kind in (("image", "Image"), ("audio", "Audio")):
        table = pa.table({"text": ["hello"], column: pa.array([{"bytes": b"not decoded", "path": None}], media)})
        features = {"text": {"dtype": "string", "_type": "Value"}, column: {"_type": kind}}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
        pq.write_table(table, tmp_path / f"{column}.parquet")
        assert list(read_records(str(tmp_path / f"{column}.parquet"))) == [
            {"text": "hello", column: {"bytes": b"not decoded", "path": None}}]


def test_a_parquet_file_datasets_cannot_convert_is_read_whole_with_a_warning(tmp_path: Path, caplog) -> None:
    """`datasets` has no type for an Arrow map column; pyarrow reads it, as it did before Parquet was mapped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "map.parquet"
    pq.write_table(pa.table({"text": ["a"], "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))}), path)
    with caplog.at_level("WARNING"):
        assert list(read_records(str(path))) == [{"text": "a", "m": [("k", 1)]}]
    assert "read whole into memory instead" in caplog.text and str(path) in caplog.text


def test_a_corrupt_parquet_page_names_the_file_and_pyarrows_reason(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pages.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " + "z" * 50 for i in range(2000)]}), path, compression="snappy")
    data = bytearray(path.read_bytes())
    data[100:400] = b"\xff" * 300  # inside the first data page; the footer at the end is intact
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^data\.train: cannot read Parquet file {re.escape(str(path))}: \S"):
        list(read_records(str(path)))


def test_a_jsonl_file_replaced_after_it_was_read_is_an_error_not_its_successors_bytes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [{"text": "old 0"}, {"text": "old 1"}])
    old = read_records(str(path))
    assert old[0] == {"text": "old 0"}
    path.unlink()  # replaced by a file of the same length
    write_jsonl(path, [{"text": "new 0"}, {"text": "new 1"}])
    assert list(read_records(str(path))) == [{"text": "new 0"}, {"text": "new 1"}]  # a new read sees the new file
    assert old[1] == {"text": "old 1"}  # the old records still read the file they indexed, through its descriptor
    from distill.data import jsonl_lines

    for f in jsonl_lines._OPEN.values():  # once that descriptor is gone, they refuse the file now at the path
        f.close()
    jsonl_lines._OPEN.clear()
    with pytest.raises(DataError, match="changed after it was read"):
        old[1]


def test_a_datasets_folder_saved_with_a_format_reads_as_plain_records(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "ds"
    ds = datasets.Dataset.from_list([{"text": f"t{i}", "n": i} for i in range(3)])
    ds.set_format("numpy", columns=["n"])
    ds.save_to_disk(str(folder))
    records = read_records(str(folder))
    assert list(records) == [{"text": f"t{i}", "n": i} for i in range(3)]
    assert type(records[0]["text"]) is str


def test_whitespace_lines_read_alike_plain_and_compressed(tmp_path: Path) -> None:
    import gzip

    body = '{"text": "a"}\n\u00a0\n\u3000 \n{"text": "b"}\n'
    plain = tmp_path / "w.jsonl"
    plain.write_text("\ufeff" + body, encoding="utf-8")
    packed = tmp_path / "w.jsonl.gz"
    packed.write_bytes(gzip.compress(("\ufeff" + body).encode("utf-8")))
    for path in (plain, packed):
        records = read_records(str(path))
        assert list(records) == [{"text": "a"}, {"text": "b"}], path
        assert records.where(1) == f"{path}, line 4"


def test_a_mixture_and_a_held_out_share_keep_integers_not_a_tuple_per_record() -> None:
    import tracemalloc

    from distill.data.dataset import split_validation
    from distill.data.normalize import mix
    from distill.data.records import Records
    from distill.recipe.data import DataConfig

    n = 100_000
    parts = [Records([{"i": i} for i in range(n)], Path(f"p{k}"), "row") for k in range(2)]
    cfg = DataConfig(train="p0", validation_fraction=0.1)
    tracemalloc.start()
    try:
        mixed = mix(parts, [1.0, 3.0], seed=0)
        train, held = split_validation(mixed, cfg)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(train) + len(held) == len(mixed) > n
    assert kept / len(mixed) < 40, f"{kept / len(mixed):.0f} bytes a record"  # ~100 with a tuple per record
    places = [records.where(i) for records in (train, held) for i in range(len(records))]
    assert sorted(places) == sorted(mixed.where(i) for i in range(len(mixed)))  # each record once, in one part
