"""The bundle writer (the only one) and the Python-side readers.

A bundle is a directory::

    manifest.json                  the contract (schema: manifest.schema.json next to this file)
    weights/<module>.safetensors   fp32, the reference module's state_dict names (frontends: their buffers)
    onnx/<module>.onnx             optional, one graph per module (see onnx_export.py)
    tokenizer/...                  tokenizer.json (+ tokenizer_config.json) or a SentencePiece model

``write_bundle`` builds one from loaded checkpoints into a temporary sibling directory and renames it
into place, so a failed build never leaves a half-written bundle. ``load_manifest`` validates a
bundle's manifest (schema, version, paths inside the bundle, optionally file sizes / SHA-256);
``build_reference_modules`` rebuilds the PyTorch reference modules from a bundle.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Optional

import numpy as np
import torch

from .checkpoints import TokenizerInfo
from .checkpoints.archs import ARCHS, FRONTEND_ARCHS, MODULE_NAMES, check_consistency, make_module
from .reference import ChunkSpec

FORMAT = "minmo-bundle"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
MANIFEST = "manifest.json"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest.schema.json")
DEFAULT_PROMPT = {"template": "chatml", "system": "You are a helpful assistant.", "audio_bos": "", "audio_eos": ""}


class BundleError(ValueError):
    """A bundle that cannot be written or read; the message names the item."""


def exporter_version() -> str:
    try:
        from importlib.metadata import version

        return version("minmo-rt")
    except Exception:
        return "0.1.0"


# ----------------------------------------------------------------------------- small helpers

def sha256_file(path: str, progress=None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            h.update(block)
            if progress is not None:
                progress.update(len(block))
    return h.hexdigest()


def _bar(total=None, desc="", unit="it", enabled=True, **kw):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=(None if enabled else True), leave=False, **kw)


def check_relpath(rel: str, what: str = "path") -> str:
    """Manifest paths: relative, '/'-separated, no '..', no drive letters or backslashes."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{what}: empty path")
    if rel.startswith("/") or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise BundleError(f"{what}: path {rel!r} must be relative to the bundle")
    if ".." in rel.split("/"):
        raise BundleError(f"{what}: path {rel!r} leaves the bundle ('..')")
    return rel


def resolve_in_bundle(bundle_dir: str, rel: str, what: str = "path") -> str:
    """Absolute path of a manifest path, after checking it (symlinks included) stays inside."""
    check_relpath(rel, what)
    root = os.path.realpath(bundle_dir)
    full = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, full]) != root or full == root:
        raise BundleError(f"{what}: path {rel!r} leaves the bundle (resolves to {full})")
    return full


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


def validate_manifest(manifest: dict) -> None:
    """JSON-Schema validation (jsonschema when installed, else the structural checks only) plus the
    cross-field rules the schema cannot express."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is an export dependency
        jsonschema = None
    if jsonschema is not None:
        v = jsonschema.Draft202012Validator(load_schema())
        errors = sorted(v.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            raise BundleError(f"manifest does not match the schema at {where}: {e.message}"
                              + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""))
    files = manifest.get("files") or {}
    for rel in files:
        check_relpath(rel, f"files entry {rel!r}")
    tok = manifest.get("tokenizer")
    if tok:
        for rel in [tok["file"]] + list(tok.get("extra_files") or []):
            if check_relpath(rel, "tokenizer") not in files:
                raise BundleError(f"tokenizer file {rel!r} is not listed in \"files\"")
    spk = manifest.get("speakers")
    if spk and check_relpath(spk["file"], "speakers") not in files:
        raise BundleError(f"speakers file {spk['file']!r} is not listed in \"files\"")
    for name, m in (manifest.get("modules") or {}).items():
        if name not in MODULE_NAMES:
            raise BundleError(f"unknown module {name!r}")
        if ARCHS.get(m.get("arch"), (None,))[0] != name:
            raise BundleError(f"module {name!r}: arch {m.get('arch')!r} does not belong in this slot")
        for key in ("weights", "onnx"):
            if m.get(key) and check_relpath(m[key], f"module {name!r} {key}") not in files:
                raise BundleError(f"module {name!r}: {key} file {m[key]!r} is not listed in \"files\"")
        mt = m.get("tokenizer")
        if mt and check_relpath(mt["file"], f"module {name!r} tokenizer") not in files:
            raise BundleError(f"module {name!r}: tokenizer file {mt['file']!r} is not listed in \"files\"")
        try:
            ARCHS[m["arch"]][1].from_dict(m.get("config") or {})
        except (TypeError, ValueError) as e:
            raise BundleError(f"module {name!r}: bad {m['arch']} config: {e}") from None


def _check_version(manifest: dict, where: str) -> None:
    if not isinstance(manifest, dict):
        raise BundleError(f"{where} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: format is {manifest.get('format')!r}, expected {FORMAT!r} (not a minmo bundle)")
    version = str(manifest.get("format_version", ""))
    major = version.split(".")[0]
    if not major.isdigit():
        raise BundleError(f"{where}: malformed format_version {version!r} (expected MAJOR.MINOR)")
    if int(major) != SUPPORTED_MAJOR:
        raise BundleError(f"{where}: bundle format version {version} is not supported (this exporter reads {SUPPORTED_MAJOR}.x)")


def verify_files(bundle_dir: str, manifest: dict) -> list[str]:
    """Problems with the listed files (missing, wrong size, SHA-256 mismatch); empty when all fine."""
    problems = []
    for rel, entry in (manifest.get("files") or {}).items():
        try:
            path = resolve_in_bundle(bundle_dir, rel, f"file {rel!r}")
        except BundleError as e:
            problems.append(str(e))
            continue
        if not os.path.isfile(path):
            problems.append(f"bundle file {rel} is missing")
            continue
        size = os.path.getsize(path)
        if size != entry["size"]:
            problems.append(f"bundle file {rel} has the wrong size ({size} bytes, manifest says {entry['size']})")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"bundle file {rel}: SHA-256 mismatch (file was modified)")
    return problems


def load_manifest(bundle: str, verify: bool = False) -> dict:
    """Reads and validates ``<bundle>/manifest.json``: format and major version, the JSON schema,
    every path relative and inside the bundle (symlinks resolved), listed files present; with
    ``verify`` also each file's size and SHA-256. Raises BundleError."""
    if not os.path.isdir(bundle):
        raise BundleError(f"bundle directory not found: {bundle}")
    path = os.path.join(bundle, MANIFEST)
    if not os.path.isfile(path):
        raise BundleError(f"bundle directory {bundle} has no {MANIFEST} (not a minmo bundle)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as e:
        raise BundleError(f"bundle manifest {path} is not valid JSON: {e}") from None
    _check_version(manifest, path)
    validate_manifest(manifest)
    for rel in manifest["files"]:
        resolve_in_bundle(bundle, rel, f"file {rel!r}")
    for name, m in manifest["modules"].items():
        for key in ("weights", "onnx"):
            if m.get(key):
                resolve_in_bundle(bundle, m[key], f"module {name!r} {key}")
    if verify:
        problems = verify_files(bundle, manifest)
        if problems:
            raise BundleError("; ".join(problems))
    return manifest


# ----------------------------------------------------------------------------- reference modules

def load_module_weights(module: torch.nn.Module, arch: str, path: str, config: dict) -> torch.nn.Module:
    from safetensors.torch import load_file

    from .quantize import dequantize_state_dict

    sd = dequantize_state_dict(load_file(path))  # quantized linears -> the fp32 weights the runtime uses
    if arch in FRONTEND_ARCHS:
        bufs = dict(module.named_buffers())
        unknown = sorted(set(sd) - set(bufs))
        if unknown:
            raise BundleError(f"{path}: unknown frontend tensors {unknown}")
        for k, v in sd.items():
            if v.shape != bufs[k].shape:
                raise BundleError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(bufs[k].shape)}")
            with torch.no_grad():
                bufs[k].copy_(v.to(bufs[k].dtype))
        return module
    res = module.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if not (arch == "qwen2" and config.get("tie_word_embeddings") and k == "lm_head.weight")]
    if missing or res.unexpected_keys:
        raise BundleError(f"{path}: weights do not match the {arch} config: missing {missing[:4]}, unexpected {res.unexpected_keys[:4]}")
    return module


def build_reference_modules(bundle_dir: str, modules: Optional[Iterable[str]] = None) -> dict:
    """name -> the PyTorch reference module rebuilt from the bundle (config, streaming mode, weights),
    in eval mode."""
    manifest = load_manifest(bundle_dir)
    chunk = ChunkSpec.from_dict(manifest["streaming"])
    out = {}
    for name, entry in manifest["modules"].items():
        if modules is not None and name not in modules:
            continue
        m = make_module(entry["arch"], entry["config"], chunk)
        load_module_weights(m, entry["arch"], resolve_in_bundle(bundle_dir, entry["weights"]), entry["config"])
        out[name] = m.eval()
    return out


# ----------------------------------------------------------------------------- writer

def decide_mode(modules: dict) -> str:
    names = set(modules)
    if {"frontend", "encoder", "projector", "llm"} <= names:
        return "minmo"
    if names == {"frontend", "encoder"} and modules["encoder"].arch == "sensevoice_small":
        return "asr-ctc"
    if names == {"llm"}:
        return "llm"
    if "voice_lm" in names and "llm" not in names:
        return "cascade"
    return "partial"


def merge_checkpoints(checkpoints: list, streaming=None) -> dict:
    """Combines loaded checkpoints into one plan: {"modules": name -> (LoadedModule, checkpoint),
    "streaming": ChunkSpec, "tokenizer": (TokenizerInfo, checkpoint) | None, "prompt": dict | None,
    "speakers": name -> arrays (only with a voice_lm)}.
    ``streaming``: a ChunkSpec (used as is), or a dict of ChunkSpec fields overriding what the
    checkpoints say (public checkpoints say nothing: full attention). Refuses a module given twice
    and cross-module shape disagreements."""
    modules: dict = {}
    for ck in checkpoints:
        for m in ck.modules:
            if m.name in modules:
                raise BundleError(f"module {m.name!r} is provided by both {modules[m.name][1].path} ({modules[m.name][1].format}) "
                                  f"and {ck.path} ({ck.format}); give each module once")
            modules[m.name] = (m, ck)
    if not modules:
        raise BundleError("the checkpoints provide no modules")
    problems = check_consistency({n: (m.arch, m.config) for n, (m, _) in modules.items()})
    if problems:
        raise BundleError("the modules do not fit together: " + "; ".join(problems))
    if not isinstance(streaming, ChunkSpec):
        override = dict(streaming or {})
        specs = {json.dumps(ck.streaming, sort_keys=True): ck for ck in checkpoints if ck.streaming}
        if len(specs) > 1 and "encoder_attention" not in override:
            raise BundleError("the checkpoints disagree on the streaming mode ("
                              + ", ".join(f"{ck.path}: {ck.streaming}" for ck in specs.values())
                              + "); choose one with --streaming")
        base = next(iter(specs.values())).streaming if len(specs) == 1 else {"encoder_attention": "full"}
        try:
            streaming = ChunkSpec.from_dict({**base, **override})
        except (TypeError, ValueError) as e:
            raise BundleError(f"bad streaming settings: {e}") from None
    # the tokenizer: the LLM's if there is one, else the encoder's (CTC vocabulary)
    owner = "llm" if "llm" in modules else ("encoder" if "encoder" in modules else None)
    tok = None
    if owner and modules[owner][1].tokenizer:
        tok = (modules[owner][1].tokenizer, modules[owner][1])
    prompt = None
    if "llm" in modules:
        prompt = dict(DEFAULT_PROMPT)
        src = modules["llm"][1]
        for ck in [c for c in checkpoints if c is not src] + [src]:  # the LLM's own checkpoint wins
            if ck.prompt:
                prompt.update({k: v for k, v in ck.prompt.items() if k in DEFAULT_PROMPT})
        if tok:
            for key in ("audio_bos", "audio_eos"):
                if prompt[key] and prompt[key] not in tok[0].special:
                    from tokenizers import Tokenizer

                    if Tokenizer.from_file(tok[0].path).token_to_id(prompt[key]) is None:
                        raise BundleError(f"prompt {key} {prompt[key]!r} is not a token of {tok[0].path}")
        llm_cfg = modules["llm"][0].config
        if tok and tok[0].vocab_size and tok[0].vocab_size > llm_cfg["vocab_size"]:
            raise BundleError(f"tokenizer has {tok[0].vocab_size} tokens, the llm only {llm_cfg['vocab_size']}")
    speakers: dict = {}
    for ck in checkpoints:
        for name, entry in (ck.speakers or {}).items():
            if name in speakers:
                raise BundleError(f"speaker {name!r} is given by two checkpoints; give each speaker once")
            speakers[name] = entry
    if speakers and "voice_lm" not in modules:
        speakers = {}  # nothing in the bundle could speak with them
    return {"modules": modules, "streaming": streaming, "tokenizer": tok, "prompt": prompt, "speakers": speakers}


SPEAKERS_FILE = "speakers.safetensors"
SPEAKER_FIELDS = ("embedding", "speech_token", "speech_feat")


def _write_speakers(speakers: dict, tmp: str) -> dict:
    """Speaker table -> speakers.safetensors (keys ``<index>.<field>``: embedding [192] float32,
    speech_token [n] int64 and speech_feat [2n, 80] float32 when the speaker has a prompt) and its
    manifest entry {"file", "names"} (names in index order)."""
    from safetensors.numpy import save_file

    names = sorted(speakers)
    tensors = {}
    for i, name in enumerate(names):
        for field in SPEAKER_FIELDS:
            if field in speakers[name]:
                dtype = np.int64 if field == "speech_token" else np.float32
                tensors[f"{i}.{field}"] = np.ascontiguousarray(speakers[name][field], dtype=dtype)
    save_file(tensors, os.path.join(tmp, SPEAKERS_FILE))
    return {"file": SPEAKERS_FILE, "names": names}


def _tokenizer_entry(info: TokenizerInfo, tmp: str, taken: set) -> dict:
    os.makedirs(os.path.join(tmp, "tokenizer"), exist_ok=True)
    rels = []
    for src in [info.path] + list(info.extra_files):
        rel = f"tokenizer/{os.path.basename(src)}"
        if rel in taken:
            raise BundleError(f"two tokenizer files would both be stored as {rel}")
        taken.add(rel)
        if src == info.path and info.added_special_tokens:
            from tokenizers import Tokenizer

            t = Tokenizer.from_file(src)
            t.add_special_tokens(list(info.added_special_tokens))
            t.save(os.path.join(tmp, rel))
        else:
            shutil.copyfile(src, os.path.join(tmp, rel))
        rels.append(rel)
    entry = {"kind": info.kind, "file": rels[0]}
    if rels[1:]:
        entry["extra_files"] = rels[1:]
    entry["eos_id"] = info.eos_id
    if info.vocab_size:
        entry["vocab_size"] = int(info.vocab_size)
    entry["special_tokens"] = {k: int(v) for k, v in info.special.items()}
    return entry


def check_output(out_dir: str, force: bool) -> None:
    """Refuses an output that exists and is not an empty directory (unless ``force`` and it holds a
    bundle: a directory without manifest.json is never deleted)."""
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise BundleError(f"output {out_dir} exists and is not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not force:
            raise BundleError(f"output directory {out_dir} is not empty; refusing to overwrite it (use --force to replace a bundle)")
        if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
            raise BundleError(f"output directory {out_dir} is not empty and does not hold a bundle (no {MANIFEST}); "
                              "refusing to delete it even with --force")


def write_bundle(checkpoints: list, out_dir: str, *, streaming=None, onnx: bool = True,
                 target: str = "cpu", force: bool = False, progress: bool = True, seed: int = 0,
                 log=print, quant: Optional[str] = None) -> dict:
    """Writes a bundle made of ``checkpoints`` (LoadedCheckpoint list) to ``out_dir``; returns the
    manifest. ``streaming`` as in :func:`merge_checkpoints`. ``quant`` (int8 / int4 / fp8, see
    export/quantize.py) quantizes the LLM's decoder-layer linears. The bundle is assembled in a temporary sibling directory and renamed into place."""
    out_dir = os.path.abspath(out_dir)
    check_output(out_dir, force)
    if quant is not None:
        from .quantize import check_mode

        check_mode(quant)
    plan = merge_checkpoints(checkpoints, streaming)
    chunk: ChunkSpec = plan["streaming"]
    if quant is not None:
        if "llm" not in plan["modules"] or plan["modules"]["llm"][0].arch != "qwen2":
            raise BundleError(f"--quant {quant} quantizes the Qwen2 LLM, and this bundle has no llm module")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        manifest = _write_into(tmp, plan, chunk, onnx=onnx, target=target, progress=progress, seed=seed, log=log,
                               quant=quant)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_into_place(tmp: str, out_dir: str) -> None:
    old = None
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
            os.rename(out_dir, os.path.join(old, "bundle"))
        else:
            os.rmdir(out_dir)
    os.rename(tmp, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _ordered(modules: dict) -> list:
    return [n for n in MODULE_NAMES if n in modules]


def _quantized_llm(plan: dict, chunk: ChunkSpec, lm, mode: str, seed: int) -> tuple[dict, dict]:
    """The llm's tensors with quantized linears, and its manifest info (quant_config, quant_check:
    the dequantized model's error against fp32 on fresh random inputs)."""
    from .quantize import calibration_embeds, logits_error, quantize_qwen2

    calib = calibration_embeds(plan["modules"], chunk, seed=seed) if mode == "int4" else None
    tensors, info = quantize_qwen2(lm.state_dict, lm.config, mode, calib)
    g = torch.Generator().manual_seed(seed + 1)
    emb = lm.state_dict["model.embed_tokens.weight"].to(torch.float32)
    ids = torch.randint(0, emb.shape[0], (24,), generator=g)
    check_in = torch.cat([emb[ids], torch.randn(8, emb.shape[1], generator=g) * float(emb.std())])
    return tensors, {"quant_config": info, "quant_check": logits_error(lm.state_dict, tensors, lm.config, check_in)}


def _write_into(tmp: str, plan: dict, chunk: ChunkSpec, *, onnx: bool, target: str, progress: bool, seed: int, log,
                quant: Optional[str] = None) -> dict:
    from safetensors.torch import save_file

    modules = plan["modules"]
    names = _ordered(modules)
    os.makedirs(os.path.join(tmp, "weights"))
    entries: dict = {}
    with _bar(len(names), "writing weights", "module", progress) as bar:
        for name in names:
            lm, ck = modules[name]
            qinfo: dict = {}
            if quant and name == "llm":  # fp32, quantized linears in their own dtypes
                tensors, qinfo = _quantized_llm(plan, chunk, lm, quant, seed)
                tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
            else:
                tensors = {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous()
                           for k, v in lm.state_dict.items()}
            if lm.arch == "qwen2" and lm.config.get("tie_word_embeddings"):
                tensors.pop("lm_head.weight", None)
            rel = f"weights/{name}.safetensors"
            save_file(tensors, os.path.join(tmp, rel), metadata={"format": "pt"})  # one key: safetensors orders metadata randomly
            entries[name] = {"arch": lm.arch, "config": dict(lm.config), "dtype": "float32",
                             "quant": quant if qinfo else "none",
                             "weights": rel, "params": int(sum(t.numel() for t in tensors.values())),
                             "source": ck.format, **qinfo}
            if lm.arch == "sensevoice_small":
                entries[name]["ctc"] = {"blank_id": int(lm.extra.get("ctc_blank_id", 0))}
            bar.update(1)
    taken: set = set()
    tok_entry = None
    if plan["tokenizer"]:
        info, owner_ck = plan["tokenizer"]
        tok_entry = _tokenizer_entry(info, tmp, taken)
    # tokenizers of other sources that own modules (a CTC vocabulary next to an LLM; the voice LM's
    # text vocabulary, cascade mode)
    owner_ck = plan["tokenizer"][1] if plan["tokenizer"] else None
    for name in names:
        lm, ck = modules[name]
        if ck is not owner_ck and ck.tokenizer and name in ("encoder", "voice_lm"):
            entries[name]["tokenizer"] = _tokenizer_entry(ck.tokenizer, tmp, taken)
    speakers_entry = _write_speakers(plan["speakers"], tmp) if plan.get("speakers") else None
    if onnx:
        from .onnx_export import ONNX_PARTS, export_module

        os.makedirs(os.path.join(tmp, "onnx"))
        with _bar(len(names), "exporting ONNX", "module", progress) as bar:
            for name in names:
                lm, _ = modules[name]
                ref = make_module(lm.arch, lm.config, chunk)
                load_module_weights(ref, lm.arch, os.path.join(tmp, entries[name]["weights"]), lm.config)
                rel = f"onnx/{name}.onnx"
                entries[name]["onnx"] = rel
                entries[name]["onnx_check"] = export_module(lm.arch, ref, os.path.join(tmp, rel), seed=seed)
                for part in ONNX_PARTS.get(lm.arch, [])[1:]:
                    prel = f"onnx/{name}_{part}.onnx"
                    entries[name].setdefault("onnx_parts", {})[part] = {
                        "onnx": prel, "onnx_check": export_module(lm.arch, ref, os.path.join(tmp, prel), seed=seed, part=part)}
                bar.update(1)
    # hash every file (the manifest itself is not listed)
    rels = sorted(os.path.relpath(os.path.join(d, f), tmp).replace(os.sep, "/")
                  for d, _, fs in os.walk(tmp) for f in fs)
    total = sum(os.path.getsize(os.path.join(tmp, r)) for r in rels)
    files = {}
    with _bar(total, "hashing", "B", progress, unit_scale=True) as bar:
        for rel in rels:
            p = os.path.join(tmp, rel)
            files[rel] = {"size": os.path.getsize(p), "sha256": sha256_file(p, bar)}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": decide_mode({n: modules[n][0] for n in names}),
        "created_by": f"minmo-export {exporter_version()}",
        "target": target,
        "sample_rate": _sample_rate(modules),
        "streaming": chunk.to_dict(),
    }
    if tok_entry:
        manifest["tokenizer"] = tok_entry
    if plan["prompt"]:
        manifest["prompt"] = plan["prompt"]
    if speakers_entry:
        manifest["speakers"] = speakers_entry
    sources: dict = {}
    for name in names:
        ck = modules[name][1]
        src = sources.setdefault(ck.path, {"format": ck.format, "path": os.path.basename(os.path.normpath(ck.path)), "modules": []})
        src["modules"].append(name)
    manifest["sources"] = list(sources.values())
    manifest["modules"] = {n: entries[n] for n in names}
    manifest["files"] = files
    validate_manifest(manifest)
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _sample_rate(modules: dict) -> int:
    if "frontend" in modules:
        return int(modules["frontend"][0].config.get("sample_rate", 16000))
    return 16000
