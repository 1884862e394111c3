"""Fill the model cache (the head's init container runs this, from the manifest): each checkpoint in
$PAGEMILL_WEIGHTS ("repo" or "repo@revision", space-separated) is downloaded into the Hugging Face
cache at $HF_HOME, once: a marker under $HF_HOME/pagemill-weights/ says it is complete, and a
checkpoint with a marker is skipped without asking the hub. Exit 1 with one line on a failure."""
import os
import sys
from pathlib import Path

from huggingface_hub import snapshot_download

done = Path(os.environ["HF_HOME"]) / "pagemill-weights"
for spec in os.environ["PAGEMILL_WEIGHTS"].split():
    repo, _, revision = spec.partition("@")
    marker = done / spec.replace("/", "--")
    if marker.is_file():
        print(f"[weights] {spec}: in the cache ({marker.read_text().strip()})", flush=True)
        continue
    try:
        path = snapshot_download(repo, revision=revision or None)
    except Exception as e:  # noqa: BLE001 - one line, the pod's status says the rest
        print(f"[weights] {spec}: cannot fetch it: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        sys.exit(1)
    done.mkdir(parents=True, exist_ok=True)
    marker.write_text(path + "\n")
    print(f"[weights] {spec}: fetched into {path}", flush=True)
