"""Install a training run as the packaged minmo-tiny model:
``python -m minmo_rt.training.ship RUN_DIR --assets bindings/python/minmo_rt/assets``.

Copies RUN_DIR/checkpoint to ASSETS/minmo_tiny (with the run's summary and loss log), renders the
demo WAV (:data:`data.DEMO_SPEC`) and the held-out test WAVs (seed 1001, never used in training)
into ASSETS/minmo_tiny_heldout with their transcripts."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from . import data as D

HELDOUT_SEED, HELDOUT_N = 1001, 16


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m minmo_rt.training.ship", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="output folder of minmo_rt.training.train")
    p.add_argument("--assets", required=True, help="the package's assets folder in the source tree")
    args = p.parse_args(argv)
    src = os.path.join(args.run, "checkpoint")
    if not os.path.isfile(os.path.join(src, "minmo.json")):
        print(f"error: {src} holds no MinMo checkpoint", file=sys.stderr)
        return 2
    dst = os.path.join(args.assets, "minmo_tiny")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    for name in ("summary.json", "train_log.jsonl"):
        shutil.copy(os.path.join(args.run, name), os.path.join(dst, "training_" + name))
    import soundfile as sf

    wave, _ = D.render(D.DEMO_SPEC)
    sf.write(os.path.join(args.assets, "demo_turn_on_lights.wav"), wave, D.SAMPLE_RATE, subtype="PCM_16")
    held = os.path.join(args.assets, "minmo_tiny_heldout")
    shutil.rmtree(held, ignore_errors=True)
    D.write_wavs(HELDOUT_SEED, HELDOUT_N, held)
    print(f"shipped {src} -> {dst}; demo WAV and {HELDOUT_N} held-out WAVs in {args.assets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
