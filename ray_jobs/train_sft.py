"""Entry point for `ray job submit --working-dir . -- python ray_jobs/train_sft.py --config CONFIG [--resume]`.

The same as `editcaption train sft`; on a cluster, Ray sets RAY_ADDRESS and the job joins it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir's package, if not installed

from editcaption.cli import app  # noqa: E402

if __name__ == "__main__":
    app(["train", "sft", *sys.argv[1:]], prog_name="editcaption")
