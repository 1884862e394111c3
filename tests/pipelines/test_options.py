"""The options are declared once (pipelines/options.py): the parser and the config checks come
from the declarations."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess

import pytest
from conftest import REPO, pagemill_cmd

from pipelines.cli import build_parser
from pipelines.ingest.config import ConfigError, IngestConfig, build_config, config_keys, load_config_file
from pipelines.options import CONFIG_OPTIONS, OPTIONS, STORE, STORE_OPTIONS, readme_table

CONFIG_ONLY = {"fidelity_seed", "relayout_only", "store"}  # no flag (store: the store's options, declared)


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def test_every_declared_option_is_in_its_commands_help():
    for command in {c for o in OPTIONS for c in o.commands}:
        text = _subparser(command).format_help()
        for o in OPTIONS:
            if command in o.commands:
                assert (o.flag if o.flag.startswith("-") else o.dest) in text, (command, o.flag)


def test_ingest_parses_exactly_the_declared_options():
    declared = {o.dest for o in OPTIONS if "ingest" in o.commands}
    parsed = {a.dest for a in _subparser("ingest")._actions if not isinstance(a, argparse._HelpAction)}
    assert parsed == declared


def test_config_keys_are_the_declared_ones():
    fields = {f.name for f in dataclasses.fields(IngestConfig)}
    declared = {o.dest for o in CONFIG_OPTIONS if o.group != STORE}
    assert declared <= fields, declared - fields
    assert fields - declared == CONFIG_ONLY
    # the store's options are config keys too, kept together in IngestConfig.store
    store = {o.dest for o in STORE_OPTIONS if o.config}
    assert store <= set(config_keys()) and not store & fields
    assert set(IngestConfig(source="a", out="b").validate().store) == {o.dest for o in STORE_OPTIONS}


def _bad_config(tmp_path, key: str, value) -> ConfigError:
    f = tmp_path / "job.json"
    import json

    f.write_text(json.dumps({"source": "a", "out": "b", key: value}))
    with pytest.raises(ConfigError) as e:
        build_config(load_config_file(str(f)), {})
    return e.value


@pytest.mark.parametrize("o", [o for o in CONFIG_OPTIONS if o.choices], ids=lambda o: o.dest)
def test_a_bad_choice_in_a_config_file_names_the_key(tmp_path, o):
    e = _bad_config(tmp_path, o.dest, "no-such-choice")
    assert str(e).startswith(f"{o.dest}: 'no-such-choice' is not one of {', '.join(o.choices)}")


@pytest.mark.parametrize("o", [o for o in CONFIG_OPTIONS if o.check], ids=lambda o: o.dest)
def test_an_out_of_bounds_number_in_a_config_file_names_the_key(tmp_path, o):
    bad = 0 if o.check == "positive" else -1
    e = _bad_config(tmp_path, o.dest, float(bad) if o.kind == "float" else bad)
    assert str(e).startswith(f"{o.dest}: must be {'>' if o.check == 'positive' else '>='} 0")


def test_a_bad_choice_in_a_config_file_exits_2_in_one_line(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("write_placement: everywhere\n")
    r = subprocess.run(pagemill_cmd("ingest", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(f)),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("pagemill: config error: write_placement: 'everywhere' is not one of "
                                "auto, workers, driver")


def test_the_readme_table_has_a_row_for_every_ingest_option():
    table = readme_table("ingest")
    for o in OPTIONS:
        if "ingest" in o.commands:
            assert f"`{o.flag}`" in table


def test_a_milvus_connection_from_flags_and_from_a_config():
    from operators.stores.milvus.client import MilvusConnection

    args = build_parser().parse_args(["status", "out", "--milvus-user", "u", "--milvus-db", "d"])
    conn = MilvusConnection.from_options("http://m:19530", args)
    assert (conn.user, conn.db_name, conn.timeout_s, conn.token_env) == ("u", "d", 60.0, "MILVUS_TOKEN")
    from operators.stores import vectors_uri

    cfg = build_config({"source": "a", "out": "/o", "milvus_user": "u", "milvus_timeout_s": 5.0,
                        "milvus_token_env": "T"}, {})
    conn = MilvusConnection.from_options(vectors_uri(cfg.store, cfg.out), cfg.store)
    assert (conn.uri, conn.user, conn.timeout_s, conn.token_env) == ("/o/milvus.db", "u", 5.0, "T")
