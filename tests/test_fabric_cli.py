"""The memory fabric from the command line: --adapter on run, chat and bench, and chat's
/adapter commands, on a tiny random model whose answer a strong adapter changes.

Answers are compared as whole stdout: a random model writes any bytes, newlines included,
and chat writes each answer followed by one newline, as run does.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil

import pytest

from hf_gguf import build
from lila.cli.options import adapter_requests, sampling_kwargs
from test_cli import assert_one_error_line, lila, lila_all

PROMPT = "Hello there"
# 8 tokens whatever the model's pick, end-of-turn included
GREEDY = ("--greedy", "-n", "8", "--ignore-eos")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model file, PEFT adapter directory); alpha 64 at rank 8 outweighs the base."""
    import peft
    directory = tmp_path_factory.mktemp("fabric_cli")
    model = build("qwen2", directory)
    config = peft.LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                             init_lora_weights=False)
    peft.get_peft_model(copy.deepcopy(model.model), config).save_pretrained(directory / "adapter")
    return model.path, directory / "adapter"


def test_run_with_an_adapter_answers_otherwise(tiny):
    model, adapter = tiny
    runs = lila_all(*[("run", model, PROMPT, *GREEDY, *flags) for flags in (
        (), ("--adapter", f"user={adapter}"), ("--adapter", f"user={adapter}", "--adapter-scale", "user=3"),
        ("--raw",), ("--raw", "--adapter", f"skill={adapter}"))])
    for r in runs:
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    base, adapted, scaled, raw, raw_adapted = (r.stdout for r in runs)
    assert len({base, adapted, scaled}) == 3
    assert raw != raw_adapted


@pytest.mark.parametrize("flags,says", [
    (("--adapter", "user"), "--adapter takes NAMESPACE=PATH, not 'user'"),
    (("--adapter", "user="), "--adapter takes NAMESPACE=PATH"),
    (("--adapter", "nobody={adapter}"), "no namespace 'nobody'; the namespaces are persona, skill"),
    (("--adapter", "user=/no/such/adapter"), "--adapter user=/no/such/adapter: no such file"),
    (("--adapter", "user={adapter}", "--adapter", "user={adapter}"), "namespace user given twice"),
    (("--adapter-scale", "user=2"), "--adapter-scale user: no --adapter user=PATH"),
    (("--adapter", "user={adapter}", "--adapter-scale", "user=big"), "a number, not 'big'"),
    (("--adapter", "user={adapter}", "--adapter-scale", "user=1e9"), "scale must be a number"),
])
def test_bad_adapter_flags(tiny, flags, says):
    model, adapter = tiny
    flags = [flag.format(adapter=adapter) for flag in flags]
    assert_one_error_line(lila("run", model, PROMPT, *flags), says=says)


def test_chat_and_bench_check_the_adapter_flags_too(tiny):
    model, adapter = tiny
    for r in lila_all(("chat", model, "--adapter", "nobody=x"), ("bench", model, "--adapter", "user")):
        assert_one_error_line(r, says="--adapter")


def test_a_file_that_is_no_adapter(tiny):
    model, _ = tiny
    assert_one_error_line(lila("run", model, PROMPT, "--adapter", f"user={model}"), says=str(model))


def test_chat_adapter_commands(tiny):
    model, adapter = tiny
    script = "\n".join([
        f"/adapter load user {adapter}",
        PROMPT,
        "/adapter",
        "/adapter scale user 3",
        "/reset",
        PROMPT,
        "/adapter scale user many",        # errors: one line each, the chat goes on
        f"/adapter load nobody {adapter}",
        "/adapter scale persona 2",
        "/adapter load user",
        "/adapter unload user",
        "/reset",
        PROMPT,
        "/quit"]) + "\n"
    chat = lila("chat", model, *GREEDY, input=script)
    adapted, scaled, base = lila_all(
        ("run", model, PROMPT, *GREEDY, "--adapter", f"user={adapter}"),
        ("run", model, PROMPT, *GREEDY, "--adapter", f"user={adapter}", "--adapter-scale", "user=3"),
        ("run", model, PROMPT, *GREEDY))
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
    assert len({adapted.stdout, scaled.stdout, base.stdout}) == 3
    assert chat.stdout == adapted.stdout + scaled.stdout + base.stdout
    err = chat.stderr
    assert f"(user holds {adapter} (peft, rank 8, attn_q attn_v ffn_down, scale 1, gate none, " in err
    assert "  persona  empty\n" in err and f"  user     {adapter} (peft, rank 8" in err
    assert "  adapters take " in err and "(user scaled by 3)" in err and "(user is empty)" in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: the scale: a number, not 'many'",
                      "error: no namespace str 'nobody'; the namespaces are persona, skill, domain, "
                      "user, session",
                      "error: namespace 'persona' holds no adapter"], err
    assert err.count("usage: /adapter") == 1


def test_chat_reload_keeps_the_adapters(tiny):
    model, adapter = tiny
    script = f"/adapter scale user 3\n/reload\n/adapter\n{PROMPT}\n/quit\n"
    chat = lila("chat", model, *GREEDY, "--adapter", f"user={adapter}", input=script)
    scaled = lila("run", model, PROMPT, *GREEDY, "--adapter", f"user={adapter}", "--adapter-scale", "user=3")
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
    assert f"; adapters user={adapter}). Type /help" in chat.stderr
    assert "(reloaded tiny-qwen2 (qwen2, " in chat.stderr
    assert f"; adapters user={adapter}); the conversation goes on)" in chat.stderr
    assert f"  user     {adapter} (peft, rank 8, attn_q attn_v ffn_down, scale 3, " in chat.stderr
    assert chat.stdout == scaled.stdout


def test_chat_reload_without_the_adapter_file_leaves_its_namespace_empty(tiny, tmp_path, capsys):
    from lila.cli import chat
    model, adapter = tiny
    copied = shutil.copytree(adapter, tmp_path / "adapter")
    parser = argparse.ArgumentParser()
    chat.add_arguments(parser)
    args = parser.parse_args([str(model), "--adapter", f"user={copied}"])
    session = chat.Chat(args, sampling_kwargs(args), adapter_requests(args))
    try:
        shutil.rmtree(copied)
        session.reload()
        assert not any(ns.loaded for ns in session.model.fabric.namespaces)
    finally:
        session.close()
    err = capsys.readouterr().err
    assert f"error: {copied}: no such file or directory; user is left empty\n" in err
    assert "(reloaded tiny-qwen2 (qwen2, context 256, ~1 MB); the conversation goes on)" in err


def test_bench_json_reports_the_adapters(tiny):
    model, adapter = tiny
    bench = ("bench", model, "-p", "4", "-n", "2", "-r", "1", "--json")
    adapted, plain = lila_all((*bench, "--adapter", f"domain={adapter}"), bench)
    assert adapted.returncode == 0 and plain.returncode == 0, adapted.stderr + plain.stderr
    result = json.loads(adapted.stdout.splitlines()[-1])
    [entry] = result["adapters"]
    assert entry["namespace"] == "domain" and entry["path"] == str(adapter)
    assert entry["ranks"] == [8] and entry["modules"] == ["attn_q", "attn_v", "ffn_down"]
    assert 0 < entry["memory_mb"] <= result["adapter_memory_mb"]
    assert f"\nadapters domain {adapter} (peft, rank 8, " in adapted.stdout
    result = json.loads(plain.stdout.splitlines()[-1])
    assert result["adapters"] == [] and result["adapter_memory_mb"] == 0
    assert "\nadapters " not in plain.stdout
