"""Data as people have it: JSON, compressed JSONL, CSV/TSV, folders and globs of shards, a `datasets` folder's
chosen split, renamed columns, ShareGPT conversations, a chat-template override, and weighted mixtures reproducible
by seed."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distill.data.dataset import tokenize_data
from distill.data.normalize import mix, read_training_records
from distill.data.sources import Records, read_records
from distill.errors import DataError
from distill.recipe import DataConfig

ROWS = [{"prompt": f"What is {i} + 1?", "completion": f" {i + 1}"} for i in range(7)]


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


WRITERS = {
    "data.jsonl.gz": lambda p, rows: p.write_bytes(gzip.compress(_jsonl(rows))),
    "data.jsonl.bz2": lambda p, rows: p.write_bytes(bz2.compress(_jsonl(rows))),
    "data.jsonl.xz": lambda p, rows: p.write_bytes(lzma.compress(_jsonl(rows))),
    "data.jsonl.zst": lambda p, rows: p.write_bytes(zstandard.ZstdCompressor().compress(_jsonl(rows))),
    "data.json": lambda p, rows: p.write_text(json.dumps(rows)),
    "data.json.gz": lambda p, rows: p.write_bytes(gzip.compress(json.dumps(rows).encode())),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_json_and_compressed_jsonl_read_the_same_records(tmp_path, name):
    path = tmp_path / name
    WRITERS[name](path, ROWS)
    records = read_records(str(path))
    assert list(records) == ROWS
    assert records.where(2) == (f"{path}, line 3" if ".jsonl" in name else f"{path}, row 3")


def test_a_bad_line_in_a_compressed_jsonl_is_named(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(ROWS[:2]) + b"{not json\n"))
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz, line 3: invalid JSON"):
        read_records(str(path))


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t"), (".csv.gz", ",")])
def test_csv_and_tsv(tmp_path, suffix, delimiter):
    path = tmp_path / f"data{suffix}"
    lines = [delimiter.join(["question", "answer"])] + [delimiter.join([r["prompt"], r["completion"]]) for r in ROWS]
    text = "\n".join(lines) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    records = read_records(str(path))
    assert [r["question"] for r in records] == [r["prompt"] for r in ROWS]


def test_a_folder_and_a_glob_of_shards_read_in_sorted_order(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i, start in enumerate(range(0, 7, 3)):
        pq.write_table(pa.Table.from_pylist(ROWS[start:start + 3]), folder / f"part-{i:03d}.parquet")
    assert list(read_records(str(folder))) == ROWS
    jsonl = tmp_path / "j"
    jsonl.mkdir()
    for i, start in enumerate(range(0, 7, 2)):
        (jsonl / f"shard-{i}.jsonl.gz").write_bytes(gzip.compress(_jsonl(ROWS[start:start + 2])))
    records = read_records(str(jsonl / "shard-*.jsonl.gz"))
    assert list(records) == ROWS
    assert records.where(3) == f"{jsonl / 'shard-1.jsonl.gz'}, line 2"  # each record names its shard and line
    assert list(read_records(str(jsonl / "shard-*.jsonl.gz"), limit=3)) == ROWS[:3]
    with pytest.raises(DataError, match="matches no files"):
        read_records(str(tmp_path / "nothing-*.jsonl"))
    (jsonl / "extra.csv").write_text("prompt,completion\na,b\n")
    with pytest.raises(DataError, match=r"mixes \.csv, \.jsonl files"):
        read_records(str(jsonl))


def test_a_datasets_folder_split_is_chosen(tmp_path):
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                                   "validation": datasets.Dataset.from_list(ROWS[4:])})
    splits.save_to_disk(str(tmp_path / "ds"))
    assert list(read_records(str(tmp_path / "ds"))) == ROWS[:4]
    assert list(read_records(str(tmp_path / "ds"), split="validation")) == ROWS[4:]
    with pytest.raises(DataError, match=r"splits \['train', 'validation'\] but no 'test'; choose one with data.split"):
        read_records(str(tmp_path / "ds"), split="test")


def test_a_split_asked_of_a_source_without_splits_is_refused(tmp_path, tiny_tokenizer):
    import datasets

    from distill.data.dataset import tokenize_validation

    path = tmp_path / "rows.jsonl"
    path.write_bytes(_jsonl(ROWS))
    no_splits = r"has no splits: only a `datasets` folder saved from a DatasetDict \(save_to_disk\) has them"
    with pytest.raises(DataError, match=rf"^data\.split: asks for the split 'test', but data\.train "
                                        rf"\(.*rows\.jsonl\) {no_splits}; point data\.train at the 'test' data "
                                        r"itself, or remove data\.split$"):
        read_training_records(DataConfig(train=str(path), split="test"))
    for default in ({}, {"split": "train"}):  # the default split is the whole file (recipes next to runs spell it out)
        assert list(read_training_records(DataConfig(train=str(path), **default))) == ROWS
    with pytest.raises(DataError, match=rf"^data\.mixture\[1\]\.split: asks for the split 'test', but "
                                        rf"data\.mixture\[1\] \(.*\*\.jsonl\) {no_splits}"):
        read_training_records(DataConfig(mixture=[{"path": str(path)},
                                                  {"path": f"{tmp_path}/*.jsonl", "split": "test"}]))
    with pytest.raises(DataError, match=r"^data\.split: .*data\.train \(builtin:tiny-stories\) has no splits.*a "
                                        r"built-in data set names its split in the source: "
                                        r"data\.train: builtin:tiny-stories/test"):
        read_training_records(DataConfig(train="builtin:tiny-stories", split="test"))
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))  # a `datasets` folder of one Dataset
    with pytest.raises(DataError, match=rf"^data\.split: .*data\.train \(.*one\) {no_splits}"):
        read_training_records(DataConfig(train=str(tmp_path / "one"), split="validation"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                          "validation": datasets.Dataset.from_list(ROWS[4:])}).save_to_disk(str(tmp_path / "dict"))
    assert list(read_training_records(DataConfig(train=str(tmp_path / "dict"), split="validation"))) == ROWS[4:]
    mixed = read_training_records(DataConfig(mixture=[{"path": str(tmp_path / "dict"), "split": "validation"}]))
    assert sorted(r["completion"] for r in mixed) == [r["completion"] for r in ROWS[4:]]
    held = DataConfig(train=str(path), validation=str(path), validation_split="test", max_length=64, token_cache=False)
    with pytest.raises(DataError, match=rf"^data\.validation_split: asks for the split 'test', but data\.validation "
                                        rf"\(.*rows\.jsonl\) {no_splits}"):
        tokenize_validation(held, tiny_tokenizer)
    default_held = held.model_copy(update={"validation_split": "validation"})
    assert len(tokenize_validation(default_held, tiny_tokenizer)) == len(ROWS)


def test_distill_check_reports_a_split_asked_of_a_source_without_splits(tmp_path, text_data, tiny_teacher_dir):
    from conftest import base_recipe
    from distill.check import check_recipe
    from distill.recipe import validate_recipe

    recipe = base_recipe(text_data, tmp_path / "run")
    recipe["data"]["split"] = "validation"
    report = check_recipe(validate_recipe(recipe))
    assert [p for p in report.problems if "split" in p] == [
        f"data.split: asks for the split 'validation', but data.train ({text_data}) has no splits: only a `datasets` "
        "folder saved from a DatasetDict (save_to_disk) has them; point data.train at the 'validation' data itself, "
        "or remove data.split"]


def test_columns_are_renamed_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": r["prompt"], "answer": r["completion"], "id": i} for i, r in enumerate(ROWS)]
    path.write_bytes(_jsonl(rows))
    data = DataConfig(train=str(path), columns={"prompt": "question", "completion": "answer"})
    records = read_training_records(data)
    assert [{k: r[k] for k in ("prompt", "completion")} for r in records] == ROWS
    assert "question" not in records[0] and records[0]["id"] == 0
    with pytest.raises(DataError, match=r"qa\.jsonl, line 1: no column 'query' to rename"):
        read_training_records(DataConfig(train=str(path), columns={"prompt": "query"}))


def test_sharegpt_conversations_become_messages(tmp_path, tiny_tokenizer):
    path = tmp_path / "sharegpt.jsonl"
    conversations = [{"conversations": [{"from": "system", "value": "Be brief."},
                                        {"from": "human", "value": r["prompt"]},
                                        {"from": "gpt", "value": r["completion"]}]} for r in ROWS]
    path.write_bytes(_jsonl(conversations))
    records = read_training_records(DataConfig(train=str(path)))
    assert records[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": ROWS[0]["prompt"]},
                                      {"role": "assistant", "content": ROWS[0]["completion"]}]
    data = tokenize_data(DataConfig(train=str(path), max_length=64, token_cache=False), tiny_tokenizer)
    assert data.format == "messages" and len(data.examples) == len(ROWS)
    path.write_bytes(_jsonl([{"conversations": [{"from": "narrator", "value": "x"}]}]))
    with pytest.raises(DataError, match=r"sharegpt\.jsonl, line 1: conversations\[0\] is from 'narrator'"):
        tokenize_data(DataConfig(train=str(path), token_cache=False), tiny_tokenizer)  # converted as it is read


def test_a_chat_template_override_renders_the_training_text(tmp_path, tiny_tokenizer):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(_jsonl([{"messages": [{"role": "user", "content": r["prompt"]},
                                           {"role": "assistant", "content": r["completion"]}]} for r in ROWS]))
    template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}<<{{ m['content'] }}>>"
                "{% else %}[{{ m['content'] }}]{% endif %}{% endfor %}")
    (tmp_path / "t.jinja").write_text(template)
    base = tokenize_data(DataConfig(train=str(path), max_length=64, token_cache=False), tiny_tokenizer)
    for given in (template, str(tmp_path / "t.jinja")):
        tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
        custom = tokenize_data(DataConfig(train=str(path), max_length=64, token_cache=False, chat_template=given),
                               tokenizer)
        text = tokenizer.decode(custom.examples[0].input_ids)
        assert text.startswith("[What is 0 + 1?]<<") and tokenizer.chat_template == template
        assert custom.examples[0].input_ids != base.examples[0].input_ids
    with pytest.raises(DataError, match="neither a Jinja template"):
        tokenize_data(DataConfig(train=str(path), chat_template="missing.jinja", token_cache=False), tiny_tokenizer)


def _source(tmp_path: Path, name: str, n: int) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(_jsonl([{"text": f"{name} {i}"} for i in range(n)]))
    return path


def test_a_weighted_mixture_follows_its_weights_and_its_seed(tmp_path):
    a, b = _source(tmp_path, "a", 3000), _source(tmp_path, "b", 3000)
    mixture = [{"path": str(a), "weight": 3.0}, {"path": str(b), "weight": 1.0}]
    records = read_training_records(DataConfig(mixture=mixture))
    texts = [r["text"] for r in records]
    share = sum(t.startswith("a ") for t in texts) / len(texts)
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / len(texts))  # within sampling error
    assert len(texts) == len(set(texts)) and sum(t.startswith("a ") for t in texts) == 3000  # first exhausted
    assert records.where(0).endswith("line " + str(int(texts[0].split()[1]) + 1))
    again = read_training_records(DataConfig(mixture=mixture))
    other = read_training_records(DataConfig(mixture=mixture, mixture_seed=1))
    assert [r["text"] for r in again] == texts and [r["text"] for r in other] != texts
    assert len(read_training_records(DataConfig(mixture=mixture, max_examples=10))) == 10


def test_a_mixture_cut_short_by_a_tiny_source_says_so(tmp_path, caplog):
    tiny, big = _source(tmp_path, "tiny", 5), _source(tmp_path, "big", 500)
    mixture = [{"path": str(tiny), "weight": 1.0}, {"path": str(big), "weight": 1.0}]
    with caplog.at_level("WARNING", logger="distill.data.normalize"):
        records = read_training_records(DataConfig(mixture=mixture))
    [line] = [r.getMessage() for r in caplog.records if r.name == "distill.data.normalize"]
    assert sum(r["text"].startswith("tiny ") for r in records) == 5 and len(records) < 50
    assert line == (f"data.mixture: data.mixture[0] ({tiny}) (weight 1) ran out after its 5 records, so the mixture "
                    f"holds {len(records)} records and leaves {505 - len(records)} records of the other sources unused "
                    "(no record repeats); to use more of them, lower that source's weight, or repeat its records by "
                    "listing it k times, each with weight 1/k")
    caplog.clear()
    with caplog.at_level("WARNING", logger="distill.data.normalize"):
        read_training_records(DataConfig(mixture=mixture, max_examples=100))
    assert "short of the 100 asked for (data.max_examples)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="distill.data.normalize"):
        assert len(read_training_records(DataConfig(mixture=mixture, max_examples=8))) == 8  # asked for, and got
        even = [{"path": str(_source(tmp_path, n, 1000))} for n in ("a", "b")]
        assert len(read_training_records(DataConfig(mixture=even))) > 1900  # shares like the sizes: nearly all used
    assert caplog.records == []


def test_mixture_sources_of_different_formats_are_refused(tmp_path):
    text = _source(tmp_path, "t", 5)
    chat = tmp_path / "c.jsonl"
    chat.write_bytes(_jsonl(ROWS))
    with pytest.raises(DataError, match=r"different formats \(.*t\.jsonl: text, .*c\.jsonl: prompt_completion\)"):
        read_training_records(DataConfig(mixture=[{"path": str(text)}, {"path": str(chat)}]))


def test_train_and_mixture_are_exclusive():
    with pytest.raises(ValueError, match=r"either data\.train .* not both"):
        DataConfig(train="x.jsonl", mixture=[{"path": "y.jsonl"}])
    with pytest.raises(ValueError, match="not neither"):
        DataConfig()


def test_mix_stops_when_the_first_source_runs_out():
    parts = [Records([{"part": n, "i": i} for i in range(n)], Path(f"p{n}"), "row") for n in (5, 50)]
    picked = mix(parts, [1.0, 1.0], seed=0)
    small = sorted(r["i"] for r in picked if r["part"] == 5)
    large = [r["i"] for r in picked if r["part"] == 50]
    assert small == [0, 1, 2, 3, 4] and len(large) == len(set(large)) < 50
    assert all(picked.where(j) == f"p{r['part']}, row {r['i'] + 1}" for j, r in enumerate(picked))


@pytest.mark.parametrize("recipe", ["data-csv-columns.yaml", "data-sharegpt.yaml", "data-mixture.yaml"])
def test_each_data_shape_example_passes_check(recipe, tiny_teacher_dir, monkeypatch):
    """`distill check` reads, renames, converts, mixes and tokenizes the example's data exactly as training would."""
    from conftest import REPO
    from distill.check import check_recipe
    from distill.recipe import load_recipe

    monkeypatch.chdir(REPO)  # the examples' paths are relative to the repository
    report = check_recipe(load_recipe(f"examples/recipes/{recipe}"))
    assert report.problems == [] and "sequences" in report.facts["data"], report
    if recipe == "data-csv-columns.yaml":  # its held-out tenth, which check reads too
        assert report.facts["validation"].startswith("6 sequences")


def test_a_changed_shard_behind_a_glob_is_tokenized_again(tmp_path, tiny_tokenizer, monkeypatch):
    """The token store's key hashes the files a glob matches, not the pattern: a rewritten shard is never served
    from the old store."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(_jsonl([{"text": "one two three"}] * 8))
    cfg = DataConfig(train=str(folder / "*.jsonl"), max_length=16, packing=False)
    before = tokenize_data(cfg, tiny_tokenizer)
    (folder / "a.jsonl").write_bytes(_jsonl([{"text": "four five six seven"}] * 3))
    after = tokenize_data(cfg, tiny_tokenizer)
    assert len(before.examples) == 8 and len(after.examples) == 3


def test_csv_cells_stay_text(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("prompt,completion\nWhat is 3 + 4?,007\nEmpty?,\n")
    assert list(read_records(str(path))) == [{"prompt": "What is 3 + 4?", "completion": "007"},
                                             {"prompt": "Empty?", "completion": ""}]


def test_sharegpt_turns_renamed_to_messages_are_converted(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_bytes(_jsonl([{"dialog": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]))
    records = read_training_records(DataConfig(train=str(path), columns={"messages": "dialog"}))
    assert records[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_a_folder_of_documents_with_a_stray_data_file_is_refused(tmp_path):
    (tmp_path / "doc.txt").write_text("a document")
    (tmp_path / "meta.json").write_text('{"k": 1}')
    with pytest.raises(DataError, match=r"both \.txt documents .* and data files"):
        read_records(str(tmp_path))


def test_a_validation_split_without_a_validation_source_is_refused(tmp_path):
    """`data.validation_split` alone would be ignored (no validation run at all): refused, naming what to set."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"'test' is read from data\.validation, which is not set"):
        DataConfig(train=str(tmp_path / "rows.jsonl"), validation_split="test")
    DataConfig(train=str(tmp_path / "rows.jsonl"), validation_split="validation")  # the default, as runs write it
