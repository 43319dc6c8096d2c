"""Live beside the UIs: export library entries into a UI's LoRA folder, keep it in step (sync), and the small
files the UIs keep beside a model (sidecars).

    from lorahub_cli.export.api import export, sync
    report = export(["style", "ink"], "~/ComfyUI/models/loras", layout="{family}/{name}")

Modules, one job each: ``names`` (layout fields and the file-name sanitiser), ``link`` (hardlink, symlink or
copy, with fallbacks said aloud), ``sidecars`` (A1111 ``<stem>.json`` written; A1111, Civitai Helper,
StabilityMatrix and Lora-Manager sidecars read as facts), ``manifest`` (what lora made in a target),
``sync`` (plan and apply), ``targets`` (named targets), ``comfy`` (the ``extra_model_paths.yaml`` stanza),
``api`` (the calls the commands and scripts make).
"""
