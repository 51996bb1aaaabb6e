#!/usr/bin/env python
"""Build edgepose's default calibration set from COCO val2017, to publish as a release asset.

    python benchmarks/tools/make_calib_set.py COCO/annotations/person_keypoints_val2017.json \
        COCO/val2017 -o coco_val2017_person_crops_v1.npz

Deterministic: one person (the largest with a labelled keypoint) from each of the first --persons
images, in a fixed pseudo-random image order, among images whose COCO license allows redistributing
crops (CC BY, CC BY-SA, no known copyright, US government work; ``--any-license`` lifts this). Writes
the ``.npz`` and a ``.sha256`` beside it, and prints the SHA-256. Publish both files side by side
(e.g. ``gh release upload calib-v1 OUT OUT.sha256``); then pin the printed value as
``edgepose.calib.dataset.CALIB_SET_SHA256`` so downloads no longer trust the sidecar alone.
The format is described in ``calib/dataset.py``.
"""
import argparse
from pathlib import Path

from edgepose.calib.dataset import CALIB_SET_FILE, DEFAULT_PERSONS, REDISTRIBUTABLE_LICENSES, build_calibration_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("annotations", type=Path, help="person_keypoints_val2017.json")
    parser.add_argument("images", type=Path, help="the val2017 image folder")
    parser.add_argument("-o", "--output", type=Path, default=Path(CALIB_SET_FILE))
    parser.add_argument("--persons", type=int, default=DEFAULT_PERSONS)
    parser.add_argument("--any-license", action="store_true", help="do not filter images by license")
    args = parser.parse_args()
    sha256 = build_calibration_set(args.annotations, args.images, args.output, persons=args.persons,
                                   licenses=None if args.any_license else REDISTRIBUTABLE_LICENSES)
    print("wrote %s (%d bytes) and %s.sha256" % (args.output, args.output.stat().st_size, args.output.name))
    print("CALIB_SET_SHA256 = %r" % sha256)


if __name__ == "__main__":
    main()
