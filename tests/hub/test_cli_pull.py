"""`lora pull` end to end: a real `lora` process, the real huggingface_hub client, the local fake Hub,
and a fresh library per test. (The other pull outcomes are covered in-process in test_pull.py.)"""

from __future__ import annotations

import hashlib

from tests.hubserver import diffusers_card, lora_safetensors

WEIGHTS = "pytorch_lora_weights.safetensors"
REPO = "sayakpaul/sd-model-finetuned-lora-t4"


def test_pull_records_card_facts_and_provenance_then_repull_is_a_no_op(hub, hf_env, tmp_home, run_cli):
    weights = lora_safetensors()
    repo = hub.create_repo(REPO, {"README.md": diffusers_card("CompVis/stable-diffusion-v1-4",
                                                              instance_prompt="sks dog"), WEIGHTS: weights})
    first = run_cli("pull", REPO, "--tag", "dogs", "--json")
    assert first.returncode == 0, first
    out = first.json()
    assert (out["status"], out["name"], out["sha256"]) == ("added", "sd-model-finetuned-lora-t4",
                                                           hashlib.sha256(weights).hexdigest())
    assert out["source"]["commit"] == repo.refs["main"]
    assert out["card"]["base_model"] == ["CompVis/stable-diffusion-v1-4"]
    shown = run_cli("show", "sd-model-finetuned-lora-t4", "--json").json()
    card = f"card:README.md@{REPO}"
    assert (shown["base_model"], shown["base_model_source"]) == ("CompVis/stable-diffusion-v1-4", card)
    assert shown["trigger_words"] == ["sks dog"] and shown["trigger_word_sources"]["sks dog"] == card
    assert {"dogs", "lora"} <= set(shown["tags"]) and shown["license"] == "creativeml-openrail-m"
    assert [(s["kind"], s["repo"], s["revision"], s["filename"]) for s in shown["sources"]] == [
        ("hub", REPO, repo.refs["main"], WEIGHTS)]

    served = len(hub.requests)
    again = run_cli("pull", REPO)
    assert again.returncode == 0, again
    assert "nothing to do" in again.stdout and "sd-model-finetuned-lora-t4" in again.stdout
    assert [r.path.split("?")[0] for r in hub.requests[served:]] == [f"/api/models/{REPO}"]  # no download

    offline = run_cli("pull", REPO, "--json", env={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.json()["status"] == "unchanged", offline
    assert len(hub.requests) == served + 1  # offline: not one request


def test_errors_have_their_code_exit_status_and_hint(hub, hf_env, tmp_home, run_cli):
    hub.create_repo("o/corrupt", {WEIGHTS: lora_safetensors()})
    hub.corrupt("o/corrupt", WEIGHTS)
    hub.create_repo("o/gated", {WEIGHTS: lora_safetensors()}, gated=True)
    hub.create_repo("o/many", {"a.safetensors": lora_safetensors(seed=1), "b.safetensors": lora_safetensors(seed=2)})
    corrupt = run_cli("pull", "o/corrupt", "--json")
    assert (corrupt.returncode, corrupt.json()["error"]["code"]) == (1, "hash-mismatch"), corrupt
    gated = run_cli("pull", "o/gated")
    assert gated.returncode == 3 and "error[gated]" in gated.stderr and "HF_TOKEN" in gated.stderr, gated
    many = run_cli("pull", "o/many")
    assert many.returncode == 1 and "--file a.safetensors" in many.stderr, many
    assert "Traceback" not in corrupt.stderr + gated.stderr + many.stderr
    assert run_cli("list", "--json").json() == []
