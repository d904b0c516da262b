"""Real vLLM on the CPU: the openai backend against a vLLM OpenAI-compatible server on loopback,
and the in-process vllm backend inside the vLLM environment, both with a tiny random Llama.

vLLM lives in its own environment (scripts/vllm_cpu_env.sh), found through
ACTION100M_VLLM_PYTHON (default <repo>/.venv-vllm/bin/python). Without it these tests skip,
except under CI (CI=true), where its absence is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from action100m_hf.build.settings import load_profile
from action100m_hf.build.stages.aggregate import prompts
from action100m_hf.build.stages.aggregate.backends import Generation, build_llm_backend
from action100m_hf.build.stages.aggregate.backends.vllm_backend import prefix_order, waves_by_tokens
from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows, parse_annotation
from action100m_hf.build.stages.aggregate.stage import AggregateStage
from action100m_hf.build.stages.aggregate.tiny import build_tiny_causal_lm
from action100m_hf.data import tree
from action100m_hf.errors import AnnotationError, ProfileError

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
VLLM_PYTHON = Path(os.environ.get("ACTION100M_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
MAX_MODEL_LEN = 8192
SERVED_NAME = "tiny-llama"
STARTUP_TIMEOUT_S = 300
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# A random model never closes a string by itself; compact JSON keeps outputs short.
STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if not VLLM_PYTHON.is_file():
        message = f"no vLLM environment at {VLLM_PYTHON} (create it with scripts/vllm_cpu_env.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return VLLM_PYTHON


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """The tiny random Llama with 32-dim attention heads: vLLM's CPU attention has kernels for
    head sizes 32, 64, 80, ... only, not for the 16 of `tiny_models`' default."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = build_tiny_causal_lm("llama", tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)
    config = AutoConfig.from_pretrained(folder)
    if config.head_dim not in VLLM_CPU_HEAD_SIZES:
        config.head_dim = 32
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def row() -> dict:
    return json.loads((GOLDEN / "stage3_tree.json").read_text())


def _vllm_env() -> dict:
    env = dict(os.environ)
    # The package on the path, the CPU engine's KV cache small (GiB), no usage report.
    env.update(PYTHONPATH=str(REPO), VLLM_CPU_KVCACHE_SPACE="1", VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(vllm_python, tiny_llama, tmp_path_factory):
    """A vLLM OpenAI-compatible server on 127.0.0.1; always stopped at the end of the module."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(tiny_llama), "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN), "--gpu-memory-utilization", "0.1",
        "--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS), "--enforce-eager",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        # Its own process group: the engine's worker process goes down with the server.
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_vllm_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"vLLM server exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not ready in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        try:  # a worker that outlived the server
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def openai_backend(base_url: str, *extra: str):
    """The tiny profile's aggregate stage on the openai backend, served by the vLLM server."""
    profile = load_profile("tiny", ["aggregate.backend=openai", f"aggregate.model={SERVED_NAME}",
                                    f"aggregate.backends.openai.base_url={base_url}", *extra])  # fmt: skip
    return AggregateStage(profile["aggregate"], profile.run).models


@pytest.mark.slow
def test_openai_backend_against_real_vllm_server(vllm_server, row):
    backend = openai_backend(vllm_server, "aggregate.backends.openai.max_concurrency=4")
    out, errors = aggregate_rows([row], backend, rounds=3, retries=2, global_depth=3, subtree_depth=3)
    assert errors == []
    schema = prompts.response_schema(backend.max_string_length)
    annotated = {n["node_id"] for n in tree.annotatable(row["nodes"])}
    for node in out[0]["nodes"]:
        if node["node_id"] in annotated:
            assert parse_annotation(json.dumps(node["gpt"]), schema) == node["gpt"]
        else:
            assert node["gpt"] is None


@pytest.mark.slow
def test_openai_backend_turns_a_refused_request_into_that_node_error(vllm_server):
    backend = openai_backend(vllm_server, "aggregate.backends.openai.retries=0")
    too_long = [{"role": "user", "content": "onion " * (2 * MAX_MODEL_LEN)}]
    short = [{"role": "user", "content": "Describe the video."}]
    refused, answered = backend.generate_json([too_long, short], prompts.response_schema(24))
    assert isinstance(refused, AnnotationError)
    assert str(refused).startswith(f"{vllm_server} refused the request: ")
    assert "maximum context length" in str(refused) or "too long" in str(refused)
    parse_annotation(answered, prompts.response_schema(24))


@pytest.mark.slow
def test_in_process_vllm_backend_in_the_vllm_environment(vllm_python, tiny_llama, row, tmp_path):
    schema = prompts.response_schema(24)
    targets = tree.annotatable(row["nodes"])
    conversations = [
        prompts.first_turn(p) for p in prompts.node_prompts(row["metadata"], row["nodes"], targets, schema, global_depth=3, subtree_depth=3)
    ]
    requests = tmp_path / "requests.json"
    requests.write_text(json.dumps({"schema": schema, "conversations": conversations}))
    out = tmp_path / "outputs.json"
    overrides = ["aggregate.backend=vllm", f"aggregate.model={tiny_llama}",
                 f"aggregate.backends.vllm.max_model_len={MAX_MODEL_LEN}"]  # fmt: skip
    command = [
        str(vllm_python), "-m", "action100m_hf.cli.llm_requests", "--profile", "tiny",
        *[x for o in overrides for x in ("--set", o)], "--requests", str(requests), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=_vllm_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    outputs = json.loads(out.read_text())["outputs"]
    assert len(outputs) == len(targets) == 4
    for text in outputs:
        value = parse_annotation(text, schema)
        assert set(value) == {"summary", "action"}


# --- Prefix-cache reuse of the builder's request order (issue 17) -------------------------------

#: Runs aggregate_rows inside the vLLM environment with the tiny profile's vllm backend, first in
#: the builder's waves, then with one wave of every node (rounds in lock step over the batch), and
#: writes the engine's counters and the hits of a never-evicting cache of the same blocks.
PREFIX_CACHE_DRIVER = """
import json, sys
from pathlib import Path

def main(spec_path, out_path):
    from action100m_hf.build.settings import load_profile
    from action100m_hf.build.stages.aggregate import prompts
    from action100m_hf.build.stages.aggregate.self_refine import aggregate_rows
    from action100m_hf.build.stages.aggregate.stage import AggregateStage
    from action100m_hf.data.tree import annotatable
    from bench_prompts import PrefixCache
    from vllm import SamplingParams

    spec = json.loads(Path(spec_path).read_text())
    profile = load_profile("tiny", spec["overrides"])
    s = profile["aggregate"]
    backend = AggregateStage(s, profile.run).models
    block = backend.llm.llm_engine.vllm_config.cache_config.block_size
    sent = []
    generate_ids = backend.generate_ids
    def recording(ids, params):
        sent.extend(ids[i] for i in backend.request_order(ids))
        return generate_ids(ids, params)
    backend.generate_ids = recording
    schema = prompts.response_schema(s.max_string_length)
    first = [prompts.first_turn(p) for row in spec["rows"] for p in prompts.node_prompts(
        row["metadata"], row["nodes"], annotatable(row["nodes"]), schema,
        global_depth=s.global_depth, subtree_depth=s.subtree_depth)]
    second = prompts.refine_turn(first[0], '{"summary": "x"}')
    chat = backend.llm.chat([second], SamplingParams(max_tokens=1), use_tqdm=False)[0].prompt_token_ids
    out = {"chat_ids_match": list(chat) == backend.prompt_ids([second])[0],
           "waves": [len(w) for w in backend.plan_waves(first)], "kv_cache_tokens": backend.kv_cache_tokens}
    for name in ("builder", "one wave"):
        if name == "one wave":
            backend.plan_waves = lambda conversations: [list(range(len(conversations)))]
        backend.llm.reset_prefix_cache()
        sent.clear()
        before = backend.prefix_cache_counters()
        _, failures = aggregate_rows(spec["rows"], backend, rounds=s.rounds, retries=s.retries,
                                     global_depth=s.global_depth, subtree_depth=s.subtree_depth)
        after = backend.prefix_cache_counters()
        cache = PrefixCache(block)
        out[name] = {**{k: after[k] - before[k] for k in after}, "failures": failures,
                     "ideal_hits": sum(cache.add(ids) for ids in sent)}
    Path(out_path).write_text(json.dumps(out))

if __name__ == "__main__":
    main(*sys.argv[1:])
"""
#: KV blocks (of the CPU engine's 128 tokens) for the prefix-cache test: 8,192 tokens, more than
#: one video's round-1 prompts (~3,600 distinct tokens) but far fewer than four videos'.
PREFIX_CACHE_KV_BLOCKS = 64


def test_prefix_order_puts_prompts_sharing_a_prefix_together():
    prompts_ = [[1, 2, 3, 4, 10], [9, 9, 9], [1, 2, 3, 4, 11, 12], [1, 2, 3, 5], [1, 2, 3, 4, 10]]
    assert prefix_order(prompts_) == [0, 4, 2, 3, 1]


def test_waves_by_tokens_bounds_the_distinct_tokens_of_a_wave():
    prompts_ = [[1, 2, 3, 4, 10], [9, 9, 9], [1, 2, 3, 4, 11, 12], [1, 2, 3, 5]]
    # In prefix order 0, 2, 3, 1: 5 tokens, +2 past the shared [1, 2, 3, 4], +1 past [1, 2, 3].
    assert waves_by_tokens(prompts_, 8) == [[0, 2, 3], [1]]
    assert waves_by_tokens(prompts_, 7) == [[0, 2], [3, 1]]
    # A prompt longer than the budget goes alone; a new wave counts its first prompt whole.
    assert waves_by_tokens(prompts_, 4) == [[0], [2], [3], [1]]
    assert waves_by_tokens([], 4) == []


@pytest.mark.parametrize("fraction", [0, 1.5])
def test_wave_cache_fraction_outside_0_1_is_named(fraction):
    generation = Generation(model="m", reasoning_effort=None, max_string_length=None, max_new_tokens=8, temperature=0)
    with pytest.raises(ProfileError, match=rf"^aggregate.backends.vllm.wave_cache_fraction must be in \(0, 1\], got {fraction}$"):
        build_llm_backend("vllm", generation, seed=0, structured_outputs_backend="guidance", wave_cache_fraction=fraction)


@pytest.mark.slow
def test_builder_order_keeps_vllm_prefix_cache_hits_with_a_small_kv_cache(vllm_python, tiny_llama, row, tmp_path):
    """Four videos (the golden tree under four titles) whose round-1 prompts overflow the KV cache:
    in the builder's waves the engine hits at least 95 % of what a never-evicting cache of the same
    blocks would (it hit exactly that on the official sample, RESULTS.md; here that is 81 % of the
    prompt tokens, so also the issue's 75 %); with every node in one wave, rounds 2-3 find their
    prompts evicted (51 %) and the same bound fails."""
    rows = []
    for k in range(4):
        video = json.loads(json.dumps(row))
        video["video_uid"] = f"{row['video_uid']}-{k}"
        video["metadata"]["title"] = f"Video {k}: {row['metadata']['title']}"
        rows.append(video)
    overrides = ["aggregate.backend=vllm", f"aggregate.model={tiny_llama}", "aggregate.backends.vllm.max_model_len=4096",
                 f"aggregate.backends.vllm.num_gpu_blocks_override={PREFIX_CACHE_KV_BLOCKS}",
                 "aggregate.backends.vllm.disable_log_stats=false"]  # fmt: skip
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"overrides": overrides, "rows": rows}))
    driver = tmp_path / "driver.py"
    driver.write_text(PREFIX_CACHE_DRIVER)
    out = tmp_path / "counters.json"
    env = {**_vllm_env(), "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'benchmarks'}"}
    done = subprocess.run([str(vllm_python), str(driver), str(spec), str(out)], capture_output=True, text=True,
                          env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["chat_ids_match"], "prompt_ids differ from the ids llm.chat sends"
    assert result["kv_cache_tokens"] == PREFIX_CACHE_KV_BLOCKS * 128
    assert len(result["waves"]) > 1 and sum(result["waves"]) == 16
    builder, one_wave = result["builder"], result["one wave"]
    assert builder["failures"] == [] and one_wave["failures"] == []
    assert builder["hits"] >= 0.95 * builder["ideal_hits"], result
    assert builder["hits"] / builder["prompt_tokens"] >= 0.75, result
    assert one_wave["hits"] < 0.95 * one_wave["ideal_hits"], result
    assert builder["hits"] / builder["prompt_tokens"] > one_wave["hits"] / one_wave["prompt_tokens"] + 0.1, result
