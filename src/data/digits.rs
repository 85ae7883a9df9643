//! The UCI handwritten digits (scikit-learn's copy, CC BY 4.0; `digits/SOURCE.md`): 1,797 real
//! 8x8 grey images of 10 classes, compiled into the binary, read as 32x32x3 images in the
//! CIFAR-10 layout. A real-image set that needs no download: the first 1,297 images are the
//! training set, the last 500 the test set.

use super::{Dataset, IMAGE_BYTES};

/// The CSV: 1,797 lines of 64 pixels (0..16) and a class (0..9).
const CSV: &str = include_str!("digits/digits.csv");

/// Images in the file, and the first this many are the training set.
pub const DIGITS_IMAGES: usize = 1_797;
pub const DIGITS_TRAIN: usize = 1_297;
/// Images in the test set (the rest of the file).
pub const DIGITS_TEST: usize = DIGITS_IMAGES - DIGITS_TRAIN;

/// Classes: the digits 0..9.
pub const DIGITS_CLASSES: usize = 10;

/// Side of an original image, and how many times each pixel is repeated along each axis.
const SIDE: usize = 8;
const SCALE: usize = 32 / SIDE;
/// Largest pixel value of the file.
const LEVELS: u32 = 16;

/// The (train, test) sets: images `[0, 1297)` and `[1297, 1797)` of the file.
pub fn digits() -> (Dataset, Dataset) {
    let mut train = empty(DIGITS_TRAIN);
    let mut test = empty(DIGITS_TEST);
    for (i, line) in CSV.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let set = if i < DIGITS_TRAIN {
            &mut train
        } else {
            &mut test
        };
        push(set, line, i);
    }
    assert_eq!(
        train.len() + test.len(),
        DIGITS_IMAGES,
        "the compiled-in digits file has {DIGITS_IMAGES} images"
    );
    (train, test)
}

fn empty(n: usize) -> Dataset {
    Dataset {
        images: Vec::with_capacity(n * IMAGE_BYTES),
        labels: Vec::with_capacity(n),
        classes: DIGITS_CLASSES,
    }
}

/// Appends the image of CSV line `i` (checked by the tests: the file is part of the build).
fn push(set: &mut Dataset, line: &str, i: usize) {
    let values: Vec<u32> = line
        .split(',')
        .map(|v| {
            let v = v.trim();
            // The file writes integers, some as `0.0`-style floats in other copies.
            v.parse::<u32>()
                .or_else(|_| v.parse::<f64>().map(|f| f as u32))
                .unwrap_or_else(|_| panic!("digits.csv line {}: `{v}` is not a number", i + 1))
        })
        .collect();
    assert_eq!(values.len(), SIDE * SIDE + 1, "digits.csv line {}", i + 1);
    let grey: Vec<u8> = values[..SIDE * SIDE]
        .iter()
        .map(|&v| ((v.min(LEVELS) * 255 + LEVELS / 2) / LEVELS) as u8)
        .collect();
    let mut plane = [0u8; 32 * 32];
    for (y, row) in plane.chunks_mut(32).enumerate() {
        for (x, p) in row.iter_mut().enumerate() {
            *p = grey[(y / SCALE) * SIDE + x / SCALE];
        }
    }
    for _ in 0..3 {
        set.images.extend_from_slice(&plane);
    }
    let label = values[SIDE * SIDE];
    assert!(
        (label as usize) < DIGITS_CLASSES,
        "digits.csv line {}",
        i + 1
    );
    set.labels.push(label as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_gives_1297_training_and_500_test_images_of_every_class() {
        let (train, test) = digits();
        assert_eq!((train.len(), test.len()), (DIGITS_TRAIN, DIGITS_TEST));
        assert_eq!(train.images.len(), DIGITS_TRAIN * IMAGE_BYTES);
        for set in [&train, &test] {
            let counts = set.class_counts();
            assert!(counts.iter().all(|&c| c >= 40), "{counts:?}");
        }
        // The first image of the file is a 0: its top row is 0,0,5,13,9,1,0,0.
        assert_eq!(train.labels[0], 0);
        let first = train.image(0);
        let top: Vec<u8> = (0..8).map(|x| first[x * 4]).collect();
        assert_eq!(top, [0, 0, 80, 207, 143, 16, 0, 0]);
        // Each pixel fills a 4x4 block, the same in all three planes.
        assert_eq!(first[3 * 4], first[3 * 32 + 3 * 4 + 3]);
        assert_eq!(&first[..1024], &first[1024..2048]);
        assert_eq!(&first[..1024], &first[2048..]);
        // No image of the test set is also a training image.
        let train_images: std::collections::HashSet<&[u8]> =
            (0..train.len()).map(|i| train.image(i)).collect();
        let shared = (0..test.len())
            .filter(|&i| train_images.contains(test.image(i)))
            .count();
        assert_eq!(shared, 0);
    }
}
