"""Regenerate ``dc_ae_hf/data/imagenet_id2label.json`` (ImageNet-1k class id -> name, keys "0".."999").

The names come from torchvision's ``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`` (shipped inside the
torchvision wheel, so this works offline). Run from the repository root:

    python scripts/make_imagenet_id2label.py
"""

import argparse
import json
from pathlib import Path

from torchvision.models import ResNet50_Weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "dc_ae_hf" / "data" / "imagenet_id2label.json"
    parser.add_argument("--output", type=Path, default=default, help="where to write the JSON file")
    args = parser.parse_args()

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    if len(categories) != 1000 or len(set(categories)) != 1000:
        raise RuntimeError(f"expected 1000 unique ImageNet categories, got {len(categories)}")
    id2label = {str(i): name for i, name in enumerate(categories)}
    args.output.write_text(json.dumps(id2label, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(id2label)} labels to {args.output}")


if __name__ == "__main__":
    main()
