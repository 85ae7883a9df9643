//! The input pipeline: epoch order, augmentation (random crop with 4-pixel zero padding and
//! horizontal flip) and normalisation, all from the seeded [`Rng`], so a batch depends only
//! on (seed, epoch, position) and not on thread timing.

use rayon::prelude::*;

use super::{Dataset, IMAGE_BYTES};
use crate::rng::Rng;

/// CIFAR-10 channel means and standard deviations (of pixels scaled to [0, 1]).
pub const MEAN: [f32; 3] = [0.4914, 0.4824, 0.4467];
pub const STD: [f32; 3] = [0.2471, 0.2435, 0.2616];

/// Zero padding of the random crop, in pixels.
pub const CROP_PAD: usize = 4;

/// The order of the training images in `epoch`: a seeded Fisher-Yates shuffle.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = Rng::for_stream(seed, &format!("shuffle/{epoch}"));
    for i in (1..len).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// How one image is transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// Offset of the 32x32 window in the 40x40 padded image, each in 0..=8.
    pub dx: usize,
    pub dy: usize,
    pub flip: bool,
}

impl Crop {
    /// The identity (test time).
    pub const CENTER: Crop = Crop {
        dx: CROP_PAD,
        dy: CROP_PAD,
        flip: false,
    };

    /// The augmentation of the image at `position` of `epoch`'s order.
    pub fn random(seed: u64, epoch: usize, position: usize) -> Self {
        let mut rng = Rng::for_stream(seed, &format!("augment/{epoch}/{position}"));
        let span = (2 * CROP_PAD + 1) as u64;
        Crop {
            dx: (rng.next_u64() % span) as usize,
            dy: (rng.next_u64() % span) as usize,
            flip: rng.next_f64() < 0.5,
        }
    }
}

/// Writes image `src` (channel-major bytes) cropped, flipped and normalised into `out`
/// (3x32x32 floats). Padding pixels are black (0) before normalisation, as in torchvision.
pub fn transform(src: &[u8], crop: Crop, out: &mut [f32]) {
    for ch in 0..3 {
        let (mean, std) = (MEAN[ch], STD[ch]);
        for y in 0..32 {
            for x in 0..32 {
                let sx = x + crop.dx;
                let sx = if crop.flip {
                    31 + 2 * CROP_PAD - sx
                } else {
                    sx
                };
                let sy = y + crop.dy;
                let inside = (CROP_PAD..32 + CROP_PAD).contains(&sx)
                    && (CROP_PAD..32 + CROP_PAD).contains(&sy);
                let v = if inside {
                    src[ch * 1024 + (sy - CROP_PAD) * 32 + (sx - CROP_PAD)]
                } else {
                    0
                };
                out[ch * 1024 + y * 32 + x] = (v as f32 / 255.0 - mean) / std;
            }
        }
    }
}

/// Pixels (`[n, 3, 32, 32]` row-major) and labels of the images `indices` of `data`, each
/// transformed by `crop(position in batch)`; images are prepared on rayon threads.
pub fn prepare_batch(
    data: &Dataset,
    indices: &[usize],
    crop: impl Fn(usize) -> Crop + Sync,
) -> (Vec<f32>, Vec<u32>) {
    let mut pixels = vec![0f32; indices.len() * IMAGE_BYTES];
    pixels
        .par_chunks_mut(IMAGE_BYTES)
        .enumerate()
        .for_each(|(k, out)| transform(data.image(indices[k]), crop(k), out));
    let labels = indices.iter().map(|&i| u32::from(data.labels[i])).collect();
    (pixels, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<u8> {
        (0..IMAGE_BYTES).map(|p| (p % 251) as u8).collect()
    }

    #[test]
    fn center_crop_only_normalises() {
        let src = ramp();
        let mut out = vec![0f32; IMAGE_BYTES];
        transform(&src, Crop::CENTER, &mut out);
        for p in [0, 5, 1024 + 77, 2047, 3071] {
            let ch = p / 1024;
            assert!((out[p] - (src[p] as f32 / 255.0 - MEAN[ch]) / STD[ch]).abs() < 1e-6);
        }
    }

    #[test]
    fn shifted_and_flipped_crops_move_pixels() {
        let src = ramp();
        let mut out = vec![0f32; IMAGE_BYTES];
        // Window starts 2 right, 1 down of the original: out(y, x) = src(y + 1 - 4 + 4.., ...)
        transform(
            &src,
            Crop {
                dx: 6,
                dy: 5,
                flip: false,
            },
            &mut out,
        );
        let norm = |v: u8, ch: usize| (v as f32 / 255.0 - MEAN[ch]) / STD[ch];
        assert_eq!(out[3 * 32 + 4], norm(src[4 * 32 + 6], 0));
        assert_eq!(out[31 * 32 + 31], norm(0, 0), "padding is black");
        transform(
            &src,
            Crop {
                dx: 4,
                dy: 4,
                flip: true,
            },
            &mut out,
        );
        assert_eq!(
            out[1024 + 7 * 32],
            norm(src[1024 + 7 * 32 + 31], 1),
            "flip mirrors x"
        );
    }

    #[test]
    fn order_and_crops_are_seeded() {
        assert_eq!(epoch_order(100, 1, 0), epoch_order(100, 1, 0));
        assert_ne!(epoch_order(100, 1, 0), epoch_order(100, 1, 1));
        let mut sorted = epoch_order(100, 1, 3);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(Crop::random(1, 2, 3), Crop::random(1, 2, 3));
        let crops: Vec<Crop> = (0..200).map(|i| Crop::random(1, 0, i)).collect();
        assert!(crops.iter().all(|c| c.dx <= 8 && c.dy <= 8));
        assert!(crops.iter().any(|c| c.flip) && crops.iter().any(|c| !c.flip));
    }
}
