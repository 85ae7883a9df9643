"""Writes scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes, shipped inside
the scikit-learn wheel as sklearn/datasets/data/digits.csv.gz) as a CIFAR-10 binary folder, so
that ablate can train and export a model on real images without downloading CIFAR-10.

usage: python3 scripts/digits_as_cifar10.py DIGITS_CSV_GZ OUT_DIR
  DIGITS_CSV_GZ  digits.csv.gz, e.g. unzipped from `pip download scikit-learn --no-deps`
  OUT_DIR        gets cifar-10-batches-bin/ (point --data-dir / ABLATE_DATA at it)

Each 8x8 image (16 grey levels) is scaled to 0..255 and upscaled to 32x32 by repeating each
pixel 4x4, the same grey in all three planes. The first 1,297 images are the training set and
the last 500 the test set. ablate reads CIFAR-10's exact file sizes (5 x 10,000 training and
10,000 test records), so the records after those are the same images again; a run uses only the
unique ones by setting `data.train_size = 1297` and `data.test_size = 500`.
"""

import gzip
import os
import sys

TRAIN = 1297


def main():
    src, out = sys.argv[1], sys.argv[2]
    rows = [line.split(",") for line in gzip.open(src, "rt").read().split()]
    images = []
    for row in rows:
        pixels = [round(int(float(v)) * 255 / 16) for v in row[:64]]
        label = int(float(row[64]))
        plane = bytes(pixels[(y // 4) * 8 + x // 4] for y in range(32) for x in range(32))
        images.append(bytes([label]) + plane * 3)
    train, test = images[:TRAIN], images[TRAIN:]
    folder = os.path.join(out, "cifar-10-batches-bin")
    os.makedirs(folder, exist_ok=True)

    def write(name, records, start):
        with open(os.path.join(folder, name), "wb") as f:
            for i in range(10000):
                f.write(records[(start + i) % len(records)])

    for b in range(5):
        write(f"data_batch_{b + 1}.bin", train, 10000 * b)
    write("test_batch.bin", test, 0)
    print(f"{folder}: {len(train)} training and {len(test)} test images of {len(rows)}")


if __name__ == "__main__":
    main()
