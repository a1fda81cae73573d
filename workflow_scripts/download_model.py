"""Download a hub model and its tokenizer into a plain save_pretrained dir (safetensors).

Runs as a local rule (on the submit host, which has the internet), so that the GPU jobs
read local dirs only.
"""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import start  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821

import minialbert  # noqa: E402,F401  (registers the minialbert model type)
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

from minialbert.utils import atomic_directory  # noqa: E402

kwargs = {"revision": cfg["revision"]} if cfg.get("revision") else {}
try:  # keep the MLM head where there is one (a teacher needs it); plain encoders otherwise
    model = AutoModelForMaskedLM.from_pretrained(cfg["name"], **kwargs)
except (ValueError, OSError, KeyError) as e:
    print(f"[workflow] no masked-LM head for {cfg['name']} ({e}); saving the encoder", flush=True)
    model = AutoModel.from_pretrained(cfg["name"], **kwargs)
tokenizer = AutoTokenizer.from_pretrained(cfg["name"], **kwargs)
with atomic_directory(out) as tmp:
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
