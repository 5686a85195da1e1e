"""Build the ToolWOZ Hugging Face dataset from MultiWOZ 2.0 and optionally push it to the Hub.

    python dataset_scripts/build_toolwoz.py --source ../shared/data/multiwoz --output toolwoz_dataset
    python dataset_scripts/build_toolwoz.py --source MultiWOZ_2.0.zip --output DIR --push-to-hub user/toolwoz

The push uses the token of ``hf auth login`` or ``$HF_TOKEN``.
"""

from __future__ import annotations

import argparse

from josh_hf.toolwoz.hub import build_toolwoz_dataset, format_build_summary


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, build (and push) the dataset, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--source",
        default=None,
        help="MultiWOZ source: ToolWOZ data folder, folder with data.json, MultiWOZ_2.0.zip or its URL "
        "(default: $JOSH_HF_MULTIWOZ or ../shared/data/multiwoz)",
    )
    parser.add_argument("--output", required=True, help="folder to write the dataset (Parquet + README.md) into")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="also upload to this Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    summary = build_toolwoz_dataset(args.source, args.output, push_to_hub=args.push_to_hub, private=args.private)
    print(format_build_summary(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
