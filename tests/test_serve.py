"""`rtune serve` on real Ray Serve (127.0.0.1), asked with the official `openai` client: completions, chat and
streaming, two runs' adapters on one base, greedy output equal to `rtune generate`'s, every bad request's status and
error body, the API key, a bounded load test, and a replica SIGKILLed under load. (The request checks alone: the
first tests, no Serve.)"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time

import pytest

from conftest import compose
from rtune.serving import ApiError, parse_request

PORT = 18431


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "x"}, 400, "model"),
    ({"model": "m", "prompt": ""}, 400, "prompt"),
    ({"model": "m", "prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": 10_000}, 422, "max_tokens"),
    ({"model": "m", "prompt": "x", "temperature": 3}, 422, "temperature"),
    ({"model": "m", "prompt": "x", "top_p": 0}, 422, "top_p"),
    ({"model": "m", "prompt": "x", "n": 2, "stream": True}, 422, "n"),
    ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ({"model": "m", "prompt": "x", "seed": 1.5}, 400, "seed"),
])
def test_request_checks(body, status, param):
    with pytest.raises(ApiError) as err:
        parse_request(body, chat=False, max_tokens_cap=64)
    assert (err.value.status, err.value.param) == (status, param)
    assert err.value.body()["error"]["message"]
    with pytest.raises(ApiError, match="role must be system"):
        parse_request({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, chat=True, max_tokens_cap=64)
    ok = parse_request({"model": "m", "prompt": ["x"], "max_tokens": 5, "stop": "\n"}, chat=False, max_tokens_cap=64)
    assert (ok.prompt, ok.max_tokens, ok.stop) == ("x", 5, ["\n"])


def test_serve_settings_refuse_an_open_host_without_a_key():
    from rtune.config import validate
    from rtune.errors import UserError

    with pytest.raises(UserError, match="serve.api_key_env"):
        validate(compose("serve.host=0.0.0.0"))
    validate(compose("serve.host=0.0.0.0", "serve.api_key_env=RTUNE_TEST_KEY"))


@pytest.fixture(scope="module")
def served(ray_cluster, tmp_path_factory):
    """A base model and two LoRA runs on it, served with a key; yields (base url, names, checkpoints)."""
    from rtune.driver.launch import train
    from rtune.driver.serve import start, stop

    out = tmp_path_factory.mktemp("serve")
    base_args = ["+experiment=arith_sft", f"storage_path={out}", "trainer.eval_every_steps=20",
                 "trainer.checkpoint_every_steps=20", "trainer.max_steps=20"]
    base = train(compose(*base_args, "run_name=base"), keep_ray=True)["latest_checkpoint"]
    runs = {}
    for name, lr in (("run-a", "3e-2"), ("run-b", "1e-1")):
        runs[name] = train(compose("data=arith_sft", f"storage_path={out}", f"run_name={name}", "peft=lora",
                                   f"model.name_or_path={base}", "trainer.max_steps=10", f"optim.lr={lr}",
                                   "trainer.eval_every_steps=10", "trainer.checkpoint_every_steps=10",
                                   "trainer.micro_batch_size=16"), keep_ray=True)["latest_checkpoint"]
    os.environ["RTUNE_TEST_KEY"] = "sk-test-" + "x" * 16
    cfg = compose(f"serve.port={PORT}", "serve.api_key_env=RTUNE_TEST_KEY", "serve.max_batch_size=8",
                  "serve.cpus_per_replica=0", "serve.num_replicas=1", "serve.max_tokens=32")
    url = start(cfg, base, "arith", runs)
    yield url, base, runs
    stop()


def client(url, key="sk-test-" + "x" * 16):
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60)


@pytest.mark.slow
def test_openai_client_completions_chat_stream_and_adapters(served):
    from rtune.inference import generate

    url, base, runs = served
    c = client(url)
    assert sorted(m.id for m in c.models.list().data) == ["arith", "run-a", "run-b"]
    done = c.completions.create(model="arith", prompt="23+45=", max_tokens=6, temperature=0)
    expected = generate(base, "23+45=", max_new_tokens=6)  # rtune generate prints prompt + continuation
    assert "23+45=" + done.choices[0].text == expected
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens >= 1
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    streamed = c.completions.create(model="arith", prompt="23+45=", max_tokens=6, temperature=0, stream=True)
    chunks = list(streamed)
    assert "".join(ch.choices[0].text for ch in chunks) == done.choices[0].text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") and chunks[-1].usage.completion_tokens >= 1
    outputs = {}
    for model in ("arith", "run-a", "run-b"):
        outputs[model] = [c.completions.create(model=model, prompt=p, max_tokens=6, temperature=0).choices[0].text
                          for p in ("23+45=", "7+8=", "61+30=")]
        local = [generate(runs[model] if model != "arith" else base, p, max_new_tokens=6)[len(p):]
                 for p in ("23+45=", "7+8=", "61+30=")]
        assert outputs[model] == local, model  # each adapter's own output, as its checkpoint gives it alone
    assert outputs["run-a"] != outputs["run-b"]


@pytest.mark.slow
def test_bad_requests_get_their_status_and_an_error_body(served):
    import requests

    url, _, _ = served
    key = {"Authorization": "Bearer sk-test-" + "x" * 16}
    post = lambda path, body, headers=key: requests.post(url + path, data=body, headers=headers, timeout=60)  # noqa: E731
    cases = [
        (post("/completions", b"{not json"), 400),
        (post("/completions", json.dumps({"model": "arith", "prompt": 3})), 400),
        (post("/completions", json.dumps({"model": "nope", "prompt": "1+1="})), 404),
        (post("/completions", json.dumps({"model": "arith", "prompt": "1+1=" * 2000})), 413),
        (post("/completions", json.dumps({"model": "arith", "prompt": "1+1=", "temperature": 9})), 422),
        (post("/completions", json.dumps({"model": "arith", "prompt": "1+1=", "max_tokens": 999})), 422),
        (post("/completions", json.dumps({"model": "arith", "prompt": "1+1="}), headers={}), 401),
        (post("/chat/completions", json.dumps({"model": "arith", "messages": [{"role": "user", "content": "hi"}]}),
              headers={"Authorization": "Bearer wrong"}), 401),
    ]
    for reply, status in cases:
        assert reply.status_code == status, (reply.status_code, reply.text)
        error = reply.json()["error"]
        assert error["message"] and "Traceback" not in reply.text
    assert requests.get(url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    import openai

    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").completions.create(model="arith", prompt="1+1=", max_tokens=2)


@pytest.mark.slow
def test_load_then_a_killed_replica_is_recovered(served):
    url, _, _ = served
    c = client(url)

    def ask(i):
        try:
            c.completions.create(model="arith", prompt=f"{i % 90}+{i % 7}=", max_tokens=4, temperature=0.8, seed=i)
            return True
        except Exception:  # noqa: BLE001 - counted below
            return False

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(200)))
    assert all(results), f"{results.count(False)} of 200 requests failed"

    from ray.util.state import list_actors

    pid = next(a.pid for a in list_actors(filters=[("state", "=", "ALIVE")]) if "ModelReplica" in a.class_name)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(ask, i) for i in range(60)]
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        during = [f.result() for f in futures]
    failed = during.count(False)
    print(f"requests that failed while the replica died: {failed} of {len(during)}")  # counted, not hidden
    deadline = time.time() + 90
    while time.time() < deadline and not ask(0):
        time.sleep(1)
    after = [ask(i) for i in range(10)]
    assert all(after), "the application did not recover after its replica was killed"


def test_a_key_variable_that_is_not_set_is_refused(monkeypatch):
    from rtune.config.serving import ServeConfig
    from rtune.driver.serve import _key_digest
    from rtune.errors import UserError

    monkeypatch.delenv("RTUNE_NO_SUCH_KEY", raising=False)
    with pytest.raises(UserError, match="RTUNE_NO_SUCH_KEY is not set"):
        _key_digest(ServeConfig(api_key_env="RTUNE_NO_SUCH_KEY"))
    monkeypatch.setenv("RTUNE_SHORT_KEY", "abc")
    with pytest.raises(UserError, match="shorter than 8"):
        _key_digest(ServeConfig(api_key_env="RTUNE_SHORT_KEY"))
    assert _key_digest(ServeConfig()) is None


def test_autoscaling_and_the_vllm_backend_compose():
    """serve.max_replicas turns on Serve's autoscaling; serve.backend=vllm becomes one ray.serve.llm LLMConfig (and,
    where vLLM is missing, one line naming the extra)."""
    from rtune.config import validate
    from rtune.driver.serve import build_app
    from rtune.driver.serve_vllm import build_vllm_app, llm_config
    from rtune.errors import UserError

    cfg = compose("serve.min_replicas=1", "serve.max_replicas=3", "serve.target_ongoing_requests=4")
    validate(cfg)
    replica = build_app(cfg, "/models/base", "base", {})._bound_deployment.init_args[0]
    scaling = replica._bound_deployment._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 3, 4)

    cfg = compose("serve.backend=vllm", "serve.max_replicas=2", "serve.max_batch_size=64", "serve.max_tokens=256",
                  "serve.max_prompt_tokens=1024")
    validate(cfg)
    config = llm_config(cfg, "/models/base", "base", {"run-a": "/runs/a"}, "/tmp/adapters")
    assert config["model_loading_config"] == {"model_id": "base", "model_source": "/models/base"}
    assert config["engine_kwargs"]["max_num_seqs"] == 64 and config["engine_kwargs"]["max_model_len"] == 1280
    assert config["engine_kwargs"]["trust_remote_code"] is False and config["engine_kwargs"]["enable_lora"]
    assert config["deployment_config"]["autoscaling_config"]["max_replicas"] == 2
    assert config["lora_config"]["dynamic_lora_loading_path"] == "/tmp/adapters"
    with pytest.raises(UserError, match="checks no API key"):
        llm_config(compose("serve.backend=vllm", "serve.api_key_env=K"), "/m", "m", {}, "")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"pip install 'rtune\[vllm\]'"):
            build_vllm_app(cfg, "/models/base", "base", {})
