"""Run `lora` adversarially, as a hostile input or an unlucky day would, and report what happened.

Every try runs the real command line in its own process, with a time limit and a memory cap, against hostile
files built here (nothing is downloaded): malicious pickles, malformed safetensors, odd names, special files,
input bombs, crafted PNG recipes, dangerous output paths, a damaged library, concurrent pulls of one URL and
kill -9 at random moments. Each try has an expectation (refused with a specific code, or succeeded) and,
where data is at stake, a check afterwards that nothing was lost.

    python scripts/adversarial.py                      # this checkout; table on stdout
    python scripts/adversarial.py --repo /tmp/old-main --json out.json
    python scripts/adversarial.py --only bombs,recipes --quick

Outcomes per try:
  expected   refused with a specific code (or succeeded where that is right), and nothing was lost
  wrong      finished, but not as it should (exit 0 on bad input, or a misleading code)
  internal   refused with the catch-all `internal` code: a crash path
  hang       killed at the time limit
  memory     killed above the memory cap
  data-loss  the check afterwards found user data destroyed, or code from a pickle ran

It never aims --force at a real device: the special-file tries use FIFOs and symlinks it makes itself.
The table for this repository is in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUTCOMES = ("expected", "wrong", "internal", "hang", "memory", "data-loss")


# --- running one try ----------------------------------------------------------------------------------
@dataclass
class Result:
    cls: str
    name: str
    outcome: str
    exit_code: Optional[int]
    code: Optional[str]
    seconds: float
    peak_rss_mb: float
    detail: str = ""


@dataclass
class Try:
    cls: str
    name: str
    argv: list[str]
    expect: object = "refuse"   # "refuse": any specific code; "ok": exit 0; "finish": any answer; a set: these codes
    check: Optional[Callable[[], Optional[str]]] = None   # returns a description of lost data, or None
    timeout: Optional[float] = None
    env: dict = field(default_factory=dict)
    cwd: Optional[Path] = None


class Runner:
    def __init__(self, repo: Path, timeout: float, mem_cap_mb: int, work: Path):
        self.repo, self.timeout, self.mem_cap_mb, self.work = repo, timeout, mem_cap_mb, work
        self.results: list[Result] = []

    def env(self, home: Path, extra: dict) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAHUB_", "HF_"))}
        env.update({"PYTHONPATH": str(self.repo), "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1",
                    "HF_HOME": str(self.work / "hf"), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"})
        env.update(extra)
        return env

    def spawn(self, argv: list[str], home: Path, extra_env: dict | None = None, cwd: Path | None = None):
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        import subprocess

        proc = subprocess.Popen([sys.executable, "-m", "lorahub_cli", *argv], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=self.env(home, extra_env or {}),
                                cwd=str(cwd or self.work), start_new_session=True)
        return proc, out, err

    def wait(self, proc, timeout: float) -> tuple[Optional[int], float, str]:
        """(exit code or None when killed, peak RSS in MB, why killed)."""
        deadline = time.monotonic() + timeout
        why, peak_kb = "", 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                # not usage.ru_maxrss: a forked child starts with the parent's resident pages counted in it
                proc.returncode = os.waitstatus_to_exitcode(status)
                return (None if why else proc.returncode), peak_kb / 1024, why
            rss, hwm = _rss_kb(proc.pid)
            peak_kb = max(peak_kb, hwm)
            if not why and rss > self.mem_cap_mb * 1024:
                why = "memory"
            elif not why and time.monotonic() > deadline:
                why = "hang"
            if why:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def run(self, t: Try, home: Path) -> Result:
        start = time.monotonic()
        proc, out, err = self.spawn(t.argv, home, t.env, t.cwd)
        rc, peak, why = self.wait(proc, t.timeout or self.timeout)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        code = _error_code(stdout, stderr)
        lost = t.check() if t.check is not None else None
        if lost:
            outcome, detail = "data-loss", lost
        elif why:
            outcome, detail = why, f"killed after {seconds:.0f} s at {peak:.0f} MB"
        elif code == "internal" or "Traceback (most recent call last)" in stderr:
            outcome, detail = "internal", _last_line(stdout + "\n" + stderr)
        else:
            outcome, detail = _judge(t.expect, rc, code, stdout)
        result = Result(t.cls, t.name, outcome, rc, code, round(seconds, 2), round(peak, 1), detail[:300])
        self.results.append(result)
        return result


def _rss_kb(pid: int) -> tuple[int, int]:
    """(resident memory now, its high-water mark) of a process, in KB; polled, so the peak is what the
    kernel recorded up to the last poll (VmHWM), which catches a spike between two polls too."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, max(rss, hwm)


def _error_code(stdout: str, stderr: str) -> Optional[str]:
    for text in (stdout, stderr):
        for line in reversed(text.strip().splitlines() or [""]):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            found = _find_code(data)
            if found:
                return found
        try:
            found = _find_code(json.loads(text))
            if found:
                return found
        except ValueError:
            pass
    for line in stderr.splitlines():   # human form: error[code]: message
        if line.startswith("error[") and "]" in line:
            return line[6:line.index("]")]
    return None


def _find_code(data) -> Optional[str]:
    if isinstance(data, dict):
        if isinstance(data.get("error"), dict):
            return data["error"].get("code")
        return None
    if isinstance(data, list):
        for item in data:
            found = _find_code(item)
            if found:
                return found
    return None


def _judge(expect, rc, code, stdout) -> tuple[str, str]:
    if expect == "finish":   # any answer, as long as it is not a crash or a hang (doctor exits 1 on findings)
        return "expected", code or f"exit {rc}"
    if expect == "ok":
        return ("expected", "") if rc == 0 else ("wrong", f"exit {rc} ({code}) where success was right")
    if rc == 0:
        return "wrong", "exit 0 on input that should have been refused"
    if expect == "refuse":
        return ("expected", code or "") if code else ("wrong", f"exit {rc} without an error code")
    return ("expected", code) if code in expect else ("wrong", f"code {code!r}, expected one of {sorted(expect)}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- building hostile inputs ------------------------------------------------------------------------------
def safetensors_bytes(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    header, offset, body = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def small_kohya(rank: int = 2, width: int = 320, n: int = 4, seed: int = 0) -> bytes:
    """A small but real SD1 kohya LoRA (attention q/k/v/out of the first block), float32."""
    rng = random.Random(seed)
    tensors = {}
    for i, proj in enumerate(("to_q", "to_k", "to_v", "to_out_0")[:n]):
        base = f"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_{proj}"
        down = struct.pack(f"<{rank * width}f", *(rng.uniform(-0.01, 0.01) for _ in range(rank * width)))
        up = struct.pack(f"<{rank * width}f", *(rng.uniform(-0.01, 0.01) for _ in range(rank * width)))
        tensors[f"{base}.lora_down.weight"] = ("F32", [rank, width], down)
        tensors[f"{base}.lora_up.weight"] = ("F32", [width, rank], up)
        tensors[f"{base}.alpha"] = ("F32", [], struct.pack("<f", float(rank)))
    return safetensors_bytes(tensors, {"ss_network_dim": str(rank), "ss_base_model_version": "sd_v1"})


def malicious_pickle(sentinel: Path, protocol: int = 2) -> bytes:
    """A pickle that would run `touch SENTINEL` if anything unpickled it unsafely."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    return pickle.dumps({"lora_unet_x.lora_down.weight": Evil()}, protocol=protocol)


def torch_zip(pickle_bytes: bytes, name: str = "archive") -> bytes:
    """A torch.save-style zip (archive/data.pkl + version) around ``pickle_bytes``."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", pickle_bytes)
        z.writestr(f"{name}/version", "3\n")
    return buf.getvalue()


def nested_reuse_pickle(depth: int = 40) -> bytes:
    """A tiny pickle whose object graph reuses one list at every level: 2**depth paths to walk."""
    import pickle

    node: list = []
    for _ in range(depth):
        node = [node, node]
    return pickle.dumps({"state": node}, protocol=2)


def zip_bomb(path: Path, gigabytes: float = 2.0) -> None:
    """A torch-style zip whose data.pkl inflates to ``gigabytes`` of zeros (about 2 MB on disk)."""
    chunk = b"\x00" * (1 << 24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data.pkl", "w", force_zip64=True) as f:
            f.write(b"\x80\x02}q\x00.")
            for _ in range(int(gigabytes * 1024 / 16)):
                f.write(chunk)
        z.writestr("archive/version", "3\n")


def png_with_chunks(path: Path, chunks: list[tuple[bytes, bytes]], width: int = 8, height: int = 8,
                    pixels: bool = True) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x00" * (3 * width) for _ in range(height)) if pixels else b""
    body = chunk(b"IHDR", ihdr) + b"".join(chunk(k, d) for k, d in chunks)
    body += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def recipe_png(path: Path, **fields) -> None:
    recipe = {"prompt": "lower", "seed": 1, "steps": 2, "guidance": 1.0, "scheduler": "ddim", "width": 32,
              "height": 32, "base": "missing-base", "base_id": "missing-base", "adapters": [], "version": 1}
    recipe.update(fields)
    text = json.dumps(recipe).encode()
    png_with_chunks(path, [(b"iTXt", b"lorahub\x00\x00\x00\x00\x00" + text)])


def sha256_tree(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --- the classes of tries ---------------------------------------------------------------------------------
class Campaign:
    def __init__(self, runner: Runner, quick: bool):
        self.r, self.quick, self.work = runner, quick, runner.work
        self.n = 0

    def fresh(self, label: str) -> Path:
        self.n += 1
        folder = self.work / f"{self.n:04d}-{label}"
        folder.mkdir(parents=True)
        return folder

    def go(self, t: Try, home: Optional[Path] = None) -> Result:
        home = home or self.fresh("home") / "home"
        if t.cwd is None:
            t.cwd = home.parent
        return self.r.run(t, home)

    def lora(self, home: Path, *argv: str, timeout: float = 120) -> tuple[Optional[int], str]:
        proc, out, err = self.r.spawn(list(argv), home)
        rc, _, _ = self.r.wait(proc, timeout)
        out.seek(0)
        return rc, out.read().decode(errors="replace")

    # malicious pickles: nothing may run, each is refused as unsafe
    def pickles(self) -> None:
        for protocol in (0, 2, 4, 5):
            for suffix in (".bin", ".pt", ".ckpt"):
                folder = self.fresh("pickle")
                sentinel = folder / "PWNED"
                data = malicious_pickle(sentinel, protocol)
                for wrap, blob in (("raw", data), ("zip", torch_zip(data))):
                    path = folder / f"evil-{protocol}-{wrap}{suffix}"
                    path.write_bytes(blob)
                    for cmd in (["inspect", "--json", str(path)], ["add", "--json", str(path)],
                                ["convert", "--json", str(path), "-o", str(folder / "out.safetensors")]):
                        # protocol 0 has no PROTO opcode to sniff: refusing it as not an adapter is as safe
                        codes = {"unsafe-pickle", "not-an-adapter-file"} if protocol == 0 and wrap == "raw" \
                            else {"unsafe-pickle"}
                        self.go(Try("pickles", f"{cmd[0]} {path.name}", cmd, codes,
                                    check=lambda s=sentinel: "a pickle ran code" if s.exists() else None))
                        if self.quick:
                            break

    # malformed safetensors: every mutation is refused with a code or read correctly, never a crash or hang
    def safetensors(self) -> None:
        good = small_kohya()
        n = int.from_bytes(good[:8], "little")
        header = json.loads(good[8:8 + n])
        variants: list[tuple[str, bytes]] = []
        for cut in (0, 4, 7, 8, 9, 20, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 10, len(good) - 1):
            variants.append((f"truncated at {cut}", good[:cut]))
        for value in (0, 1, 7, n + 1, 2**31, 2**63 - 1, 2**64 - 1):
            variants.append((f"header length {value}", struct.pack("<Q", value) + good[8:]))
        for label, raw in (("not json", b"{not json"), ("bad utf-8", b'{"a\xff": 1}'), ("a list", b"[1, 2]"),
                           ("deep", b"[" * 100000 + b"]" * 100000), ("nul", b"\x00" * 64)):
            raw += b" " * (-len(raw) % 8)
            variants.append((f"header {label}", struct.pack("<Q", len(raw)) + raw))
        key = next(k for k in header if k.endswith("lora_down.weight"))
        alpha = next(k for k in header if k.endswith(".alpha"))
        edits = {
            "unknown dtype": (key, "dtype", "Q7"), "F6_E2M3 alpha": (alpha, "dtype", "F6_E2M3"),
            "F4 down": (key, "dtype", "F4"), "shape [0, 2**63]": (key, "shape", [0, 2**63]),
            "negative shape": (key, "shape", [-1, 320]), "shape overflow": (key, "shape", [2**40, 2**40]),
            "offsets reversed": (key, "data_offsets", [100, 0]), "offsets past end": (key, "data_offsets", [0, 10**12]),
            "offsets overlap": (key, "data_offsets", [0, 8]), "shape a string": (key, "shape", "320"),
            "dtype null": (key, "dtype", None), "string alpha": (alpha, "dtype", "STRING"),
            "nan offsets": (key, "data_offsets", [0.5, 1.5]),
        }
        for label, (k, field_name, value) in edits.items():
            h = json.loads(json.dumps(header))
            h[k][field_name] = value
            raw = json.dumps(h).encode()
            raw += b" " * (-len(raw) % 8)
            variants.append((label, struct.pack("<Q", len(raw)) + raw + good[8 + n:]))
        rng = random.Random(7)
        for i in range(40 if self.quick else 160):
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(0, 8 + n)
                data[pos] = rng.randrange(256)
            variants.append((f"flip #{i}", bytes(data)))
        nonfinite = safetensors_bytes({
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight":
                ("F32", [1, 320], struct.pack("<320f", *([float("nan")] * 320))),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight":
                ("F32", [320, 1], struct.pack("<320f", *([float("inf")] * 320)))})
        folder = self.fresh("safetensors")
        for i, (label, data) in enumerate(variants):
            path = folder / f"v{i:03d}.safetensors"
            path.write_bytes(data)
            # a flipped byte may leave a valid file (a letter of a name or of metadata): any answer but a crash
            self.go(Try("safetensors", label, ["inspect", "--json", str(path)], "finish" if "flip" in label
                        else "refuse"))
        # what inspect/add accept, convert must accept too (or all refuse with the same code)
        for label in ("F6_E2M3 alpha", "shape [0, 2**63]"):
            idx = next(i for i, (lab, _) in enumerate(variants) if lab == label)
            path = folder / f"v{idx:03d}.safetensors"
            self.go(Try("safetensors", f"convert: {label}", ["convert", "--json", str(path), "--to", "safetensors",
                                                              "-o", str(folder / f"c{idx}.safetensors")]))
        path = folder / "nonfinite.safetensors"
        path.write_bytes(nonfinite)
        self.go(Try("safetensors", "NaN/Inf adapter: inspect warns", ["inspect", "--json", str(path)], "ok",
                    check=lambda: None))
        self.results_fix_nonfinite(path)

    def results_fix_nonfinite(self, path: Path) -> None:
        """inspect of a NaN adapter must carry a non-finite warning (M2): judged on the JSON."""
        home = self.fresh("nonfinite") / "home"
        rc, out = self.lora(home, "inspect", "--json", str(path))
        warned = "non-finite" in out or "NaN" in out or "nan" in out.lower()
        last = self.r.results[-1]
        if last.outcome == "expected" and not warned:
            last.outcome, last.detail = "wrong", "no non-finite warning"

    # odd paths and names: long CJK names, control and bidi characters; a batch goes on past a bad file
    def names(self) -> None:
        good = small_kohya()
        for label, stem in (("79 CJK characters", "漢" * 79), ("250-byte name", "a" * 236),
                            ("newline", "two\nlines"), ("RTL override", "safe\u202egnp.exe"), ("leading dash", "-rf"),
                            ("ESC sequence", "x\x1b[31mred"), ("spaces and quotes", "a 'b' \"c\"")):
            folder = self.fresh("names")
            src = folder / "in"
            src.mkdir()
            try:
                (src / f"{stem}.safetensors").write_bytes(good)
            except OSError as e:
                self.r.results.append(Result("names", label, "expected", None, None, 0, 0, f"filesystem refuses: {e}"))
                continue
            (src / "plain.safetensors").write_bytes(small_kohya(seed=1))
            home = folder / "home"
            self.go(Try("names", f"add DIR with {label}", ["add", "--json", str(src)], "ok"), home)
            rc, out = self.lora(home, "list", "--json")
            if "plain" not in out:
                last = self.r.results[-1]
                last.outcome, last.detail = "wrong", "the batch stopped: plain.safetensors was not added"
        home = self.fresh("names") / "home"
        f = home.parent / "x.safetensors"
        f.write_bytes(good)
        self.go(Try("names", "add --name with RTL override", ["add", "--json", str(f), "--name", "evil\u202etxt"],
                    "refuse"), home)

    # special files: FIFOs, devices, empty folders, symlinks to endless files
    def specials(self) -> None:
        folder = self.fresh("special")
        fifo = folder / "pipe.safetensors"
        os.mkfifo(fifo)
        self.go(Try("specials", "inspect FIFO", ["inspect", "--json", str(fifo)], timeout=20))
        dir_with_fifo = folder / "d"
        dir_with_fifo.mkdir()
        os.mkfifo(dir_with_fifo / "pipe.safetensors")
        (dir_with_fifo / "ok.safetensors").write_bytes(small_kohya())
        self.go(Try("specials", "add DIR holding a FIFO", ["add", "--json", str(dir_with_fifo)], timeout=20))
        self.go(Try("specials", "inspect /dev/zero", ["inspect", "--json", "/dev/zero"], timeout=20))
        empty = folder / "empty"
        empty.mkdir()
        self.go(Try("specials", "inspect empty folder", ["inspect", "--json", str(empty)]))
        # an in-place file replaced by a symlink to /dev/zero: doctor must not hang
        home = folder / "home"
        lib = folder / "lib"
        lib.mkdir()
        target = lib / "a.safetensors"
        target.write_bytes(small_kohya())
        self.lora(home, "add", "--in-place", str(target))
        target.unlink()
        target.symlink_to("/dev/zero")
        self.go(Try("specials", "doctor with in-place file -> /dev/zero", ["doctor", "--json"], "finish", timeout=30),
                home)

    # input bombs: memory stays bounded, time stays linear
    def bombs(self) -> None:
        folder = self.fresh("bombs")
        p = folder / "nested.pt"
        p.write_bytes(torch_zip(nested_reuse_pickle()))
        self.go(Try("bombs", "nested list reuse pickle (H1)", ["inspect", "--json", str(p)], timeout=60))
        p = folder / "zipbomb.pt"
        zip_bomb(p, 0.5 if self.quick else 2.0)
        self.go(Try("bombs", f"compressed torch zip ({p.stat().st_size // 1024} KB) (H2)",
                    ["inspect", "--json", str(p)], timeout=60))
        p = folder / "sparse.bin"
        with open(p, "wb") as f:
            f.write(b"\x80\x02}q\x00(X")
            f.truncate(2 * 1024**3)
        self.go(Try("bombs", "sparse 2 GB pickle look-alike (H2)", ["inspect", "--json", str(p)], timeout=60))
        # H3: quadratic de-duplication of trigger words
        d = folder / "card"
        d.mkdir()
        (d / "a.safetensors").write_bytes(small_kohya())
        words = ", ".join(f"w{i}" for i in range(130_000))
        (d / "README.md").write_text(f"---\ninstance_prompt: x\n---\nTrigger words: {words}\n")
        self.go(Try("bombs", f"{(d / 'README.md').stat().st_size // 1024} KB README beside an adapter (H3)",
                    ["inspect", "--json", str(d / "a.safetensors")], "ok", timeout=60))
        freq = {f"{i}_folder{i}": {f"tag{i}_{j}": 1 for j in range(3)} for i in range(8000)}
        meta = {"ss_tag_frequency": json.dumps(freq), "ss_dataset_dirs": json.dumps({k: {"n_repeats": 1, "img_count": 1}
                                                                                      for k in freq})}
        raw = small_kohya()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header["__metadata__"].update(meta)
        hb = json.dumps(header).encode()
        hb += b" " * (-len(hb) % 8)
        p = folder / "tags.safetensors"
        p.write_bytes(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
        self.go(Try("bombs", "kohya tag frequencies of 8,000 folders (H3)", ["inspect", "--json", str(p)], "ok",
                    timeout=60))

    # crafted PNG recipes
    def recipes(self) -> None:
        folder = self.fresh("recipes")
        cases = {
            "zTXt bomb": [(b"zTXt", b"lorahub\x00\x00" + zlib.compress(b" " * (512 * 1024**2), 9))],
            "iTXt compressed bomb": [(b"iTXt", b"lorahub\x00\x01\x00\x00\x00" + zlib.compress(b"[" * (512 * 1024**2), 9))],
            "200 MB tEXt chunk": [(b"tEXt", b"lorahub\x00" + b"a" * (200 * 1024**2))],
            "JSON 100k levels deep": [(b"iTXt", b"lorahub\x00\x00\x00\x00\x00" + b"[" * 100_000 + b"]" * 100_000)],
            "A1111 value with \\x": [(b"tEXt", b'parameters\x00p\nSteps: 2, Sampler: x, Seed: "abc\\x"')],
        }
        for label, chunks in cases.items():
            p = folder / f"{label.split()[0]}.png"
            png_with_chunks(p, chunks)
            self.go(Try("recipes", label, ["recipe", "--json", str(p)], {"bad-recipe", "no-recipe"}, timeout=60))
        p = folder / "pixels.png"
        png_with_chunks(p, [(b"iTXt", b"lorahub\x00\x00\x00\x00\x00{}")], width=100_000, height=100_000, pixels=False)
        self.go(Try("recipes", "pixel bomb 100000x100000", ["recipe", "--json", str(p)], {"bad-recipe", "no-recipe"},
                    timeout=60))
        for label, fields in (("seed 'notanint'", {"seed": "notanint"}), ("steps 1e12", {"steps": 1e12}),
                              ("steps 1e308", {"steps": 1e308}), ("size 100000x100000", {"width": 100000, "height": 100000}),
                              ("weight 'heavy'", {"adapters": [{"name": "x", "sha256": "0" * 64, "weight": "heavy"}]})):
            p = folder / f"gen-{self.n}-{len(label)}.png"
            recipe_png(p, **fields)
            self.go(Try("recipes", f"generate --from: {label}", ["generate", "--json", "--from", str(p), "-o",
                                                                  str(folder / "out")], {"bad-recipe", "usage"},
                        timeout=120))
        existing = folder / "existing.png"
        existing.write_bytes(b"not yours")
        self.go(Try("recipes", "generate -o EXISTING_FILE", ["generate", "--json", "lower", "--base", "sd15", "-o",
                                                              str(existing)], {"usage", "unsafe-output"},
                    check=lambda: None if existing.read_bytes() == b"not yours" else "an existing file was replaced"))

    # outputs: --force never replaces what is not ours
    def outputs(self) -> None:
        folder = self.fresh("outputs")
        src = folder / "a.safetensors"
        src.write_bytes(small_kohya())
        fifo = folder / "fifo"
        os.mkfifo(fifo)
        self.go(Try("outputs", "convert -o FIFO --force", ["convert", "--json", str(src), "--to", "safetensors", "-o",
                                                           str(fifo), "--force"], timeout=30,
                    check=lambda: None if fifo.is_fifo() else "the FIFO was replaced by a file"))
        victim = folder / "victim.txt"
        victim.write_text("precious")
        link = folder / "link.safetensors"
        link.symlink_to(victim)
        self.go(Try("outputs", "convert -o SYMLINK --force", ["convert", "--json", str(src), "--to", "safetensors",
                                                              "-o", str(link), "--force"], "ok",
                    check=lambda: None if victim.read_text() == "precious" else "the symlink's target was overwritten"))
        home = folder / "home"
        self.lora(home, "add", str(src))
        db = home / "registry.db"
        before = db.stat().st_size if db.exists() else 0
        self.go(Try("outputs", "convert -o $LORAHUB_HOME/registry.db --force",
                    ["convert", "--json", str(src), "--to", "safetensors", "-o", str(db), "--force"],
                    check=lambda: None if db.exists() and db.stat().st_size == before else "the database was replaced"),
                home)
        self.go(Try("outputs", "merge -o $LORAHUB_HOME --force",
                    ["merge", "--json", str(src), str(src), "-o", str(home), "--force"],
                    check=lambda: None if db.exists() else "the library was deleted"), home)
        self._fuse_cases(folder)

    def _fuse_cases(self, folder: Path) -> None:
        try:
            from tests.fixtures.pipelines import make_tiny_sd_pipeline
        except Exception as e:  # pragma: no cover - depends on the checkout
            print(f"fuse tries skipped: {e}", file=sys.stderr)
            return
        cache = Path(tempfile.gettempdir()) / "lorahub-adversarial-tiny-sd"
        if not (cache / "model_index.json").exists():
            make_tiny_sd_pipeline(cache)
        from tests.pipeline.helpers import layer_shapes, load_plain, random_adapter, write_diffusers

        shapes = layer_shapes(load_plain(cache))
        keys = [k for k in shapes if k.startswith("unet.") and ".attn" in k]
        adapter = write_diffusers(random_adapter(shapes, keys, rank=2, alpha=None, seed=1), folder / "tiny.safetensors")
        for label, out_of in (("the base's parent", lambda g: g), ("the base itself", lambda g: g / "base"),
                              ("$LORAHUB_HOME", None)):
            g = self.fresh("fuse")
            base = g / "base"
            shutil.copytree(cache, base)
            (g / "other.txt").write_text("unrelated")
            home = g / "home"
            before = sha256_tree(g)
            out = out_of(g) if out_of else home
            if out_of is None:
                self.lora(home, "list")
                (home / "keep.txt").parent.mkdir(parents=True, exist_ok=True)
                (home / "keep.txt").write_text("library")
                before = sha256_tree(g)

            def check(g=g, before=before):
                after = sha256_tree(g)
                lost = [k for k in before if k not in after or after[k] != before[k]]
                return f"{len(lost)} files lost or changed, e.g. {lost[0]}" if lost else None

            self.go(Try("outputs", f"fuse --force -o {label}", ["fuse", "--json", "--base", str(base), "-a", str(adapter),
                                                                "-o", str(out), "--force", "--device", "cpu"],
                        timeout=180, check=check), home)

    # the library: damaged records, flipped bytes, escaping homes
    def library(self) -> None:
        def library_with(n: int) -> Path:
            folder = self.fresh("library")
            home = folder / "home"
            for i in range(n):
                f = folder / f"a{i}.safetensors"
                f.write_bytes(small_kohya(seed=i))
                self.lora(home, "add", str(f), "--name", f"a{i}")
            return home

        home = library_with(3)
        blobs = sha256_tree(home / "blobs")
        (home / "registry.db").write_bytes(b"")
        for cmd in (["list", "--json"], ["doctor", "--json", "--fix"]):
            self.go(Try("library", f"{cmd[0]} with a 0-byte database", cmd, {"damaged-library"},
                        check=lambda: None if all(k in sha256_tree(home / "blobs") for k in blobs)
                        else "stored adapters were deleted"), home)
        home = library_with(2)
        (home / "registry.db").write_bytes(os.urandom(8192))
        self.go(Try("library", "list with a garbage database", ["list", "--json"], {"damaged-library"}), home)
        home = library_with(2)
        for blob in [p for p in (home / "blobs" / "sha256").rglob("*") if p.is_file()]:  # both entries; no .lock
            data = bytearray(blob.read_bytes())
            data[-5] ^= 0x01
            os.chmod(blob, 0o644)
            blob.write_bytes(bytes(data))
        for cmd in (["convert", "--json", "a0", "--to", "diffusers", "-o", str(home.parent / "c.safetensors")],
                    ["merge", "--json", "a0", "a1", "-o", str(home.parent / "m.safetensors")]):
            self.go(Try("library", f"{cmd[0]} with one flipped byte in a stored adapter", cmd,
                        {"hash-mismatch", "damaged-file"}), home)
        for label, rel in (("%2F in LORAHUB_HOME", "x%2F..%2F..%2Fescaped"), ("?mode=ro in LORAHUB_HOME", "h?mode=ro")):
            folder = self.fresh("home-url")
            home = folder / rel
            f = folder / "a.safetensors"
            f.write_bytes(small_kohya())

            before = set(folder.parent.rglob("registry.db"))   # other tries' libraries are not strays

            def check(folder=folder, home=home, before=before):
                inside = (home / "registry.db").exists()
                # `x/../../escaped` from this folder lands in the campaign's folder; looking higher would count
                # other programs' libraries in /tmp
                strays = [p for p in set(folder.parent.rglob("registry.db")) - before
                          if not str(p).startswith(str(home))]
                stray_q = (folder / "q").exists() or (home.parent / "q").exists()
                if not inside or strays or stray_q:
                    return f"database not in the home (in it: {inside}, elsewhere: {[str(s) for s in strays][:2]})"
                return None

            self.go(Try("library", f"add with {label}", ["add", "--json", str(f)], "ok", check=check), home)

    # concurrency: two pulls of one URL; parallel adds
    def concurrency(self) -> None:
        folder = self.fresh("serve")
        (folder / "a.safetensors").write_bytes(small_kohya(seed=3) + b"")
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/a.safetensors"
        trials = 5 if self.quick else 20
        for i in range(trials):
            home = self.fresh("pull") / "home"
            procs = [self.r.spawn(["pull", "--json", url], home) for _ in range(2)]
            start = time.monotonic()
            for j, (proc, out, err) in enumerate(procs):
                rc, peak, why = self.r.wait(proc, self.r.timeout)
                out.seek(0)
                err.seek(0)
                stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
                code = _error_code(stdout, stderr)
                if why:
                    outcome, detail = why, ""
                elif code == "internal" or "Traceback" in stderr:
                    outcome, detail = "internal", _last_line(stdout + stderr)
                else:
                    outcome, detail = ("expected", "") if rc == 0 else ("wrong", f"exit {rc} ({code})")
                self.r.results.append(Result("concurrency", f"two pulls of one URL #{i} ({j})", outcome, rc, code,
                                             round(time.monotonic() - start, 2), round(peak, 1), detail))
        server.shutdown()
        # kill -9 at random moments during add; the library must still read and doctor find nothing lost
        rng = random.Random(11)
        for i in range(4 if self.quick else 12):
            folder = self.fresh("kill")
            files = []
            for j in range(6):
                f = folder / f"k{j}.safetensors"
                f.write_bytes(small_kohya(seed=100 + j))
                files.append(str(f))
            home = folder / "home"
            proc, out, err = self.r.spawn(["add", *files], home)
            time.sleep(rng.uniform(0.3, 2.5))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.r.wait(proc, 10)
            self.go(Try("kill -9", f"doctor after kill -9 #{i}", ["doctor", "--json"], "ok"), home)


def summarise(results: list[Result]) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in results:
        row = rows.setdefault(r.cls, {"class": r.cls, "tries": 0, **{o: 0 for o in OUTCOMES}, "peak_rss_mb": 0.0,
                                      "slowest_s": 0.0})
        row["tries"] += 1
        row[r.outcome] += 1
        row["peak_rss_mb"] = max(row["peak_rss_mb"], r.peak_rss_mb)
        row["slowest_s"] = max(row["slowest_s"], r.seconds)
    total = {"class": "all", "tries": 0, **{o: 0 for o in OUTCOMES}, "peak_rss_mb": 0.0, "slowest_s": 0.0}
    for row in rows.values():
        for k in ("tries", *OUTCOMES):
            total[k] += row[k]
        total["peak_rss_mb"] = max(total["peak_rss_mb"], row["peak_rss_mb"])
        total["slowest_s"] = max(total["slowest_s"], row["slowest_s"])
    return [*rows.values(), total]


def markdown(rows: list[dict], results: list[Result]) -> str:
    cols = ["class", "tries", *OUTCOMES, "peak_rss_mb", "slowest_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    bad = [r for r in results if r.outcome != "expected"]
    if bad:
        lines += ["", "Not as expected:", ""]
        for r in bad:
            lines.append(f"- [{r.outcome}] {r.cls}: {r.name} (exit {r.exit_code}, code {r.code}) {r.detail}")
    return "\n".join(lines)


CLASSES = ("pickles", "safetensors", "names", "specials", "bombs", "recipes", "outputs", "library", "concurrency")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose `lora` to run (default: this one)")
    parser.add_argument("--only", default=",".join(CLASSES), help="comma-separated classes: " + ", ".join(CLASSES))
    parser.add_argument("--quick", action="store_true", help="fewer tries per class")
    parser.add_argument("--timeout", type=float, default=90, help="seconds per try before it counts as a hang")
    parser.add_argument("--mem-cap-mb", type=int, default=3000, help="RSS above which a try is killed")
    parser.add_argument("--json", type=Path, help="write every try's result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorahub-adversarial-") as tmp:
        runner = Runner(args.repo.resolve(), args.timeout, args.mem_cap_mb, Path(tmp))
        campaign = Campaign(runner, args.quick)
        for name in args.only.split(","):
            started = time.monotonic()
            getattr(campaign, name.strip())()
            print(f"{name}: {len(runner.results)} tries so far, {time.monotonic() - started:.0f} s", file=sys.stderr)
            if args.json:   # after every class, so a run cut short still leaves what it found
                args.json.write_text(json.dumps({"summary": summarise(runner.results),
                                                 "tries": [r.__dict__ for r in runner.results]}, indent=1))
        print(markdown(summarise(runner.results), runner.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
