//! A deterministic, CIFAR-shaped, class-dependent and learnable dataset for tests, CI and a
//! quick start.
//!
//! Class c is a sinusoidal grating with its own orientation, spatial frequency and colour
//! balance; each image has a random phase (so position alone tells nothing), a random
//! contrast and Gaussian pixel noise. A small CNN separates the classes; a linear model on
//! raw pixels does poorly because of the random phase.

use super::{Dataset, IMAGE_BYTES};
use crate::rng::Rng;

/// `n` images of `classes` balanced classes (label = index mod classes); the same
/// (`n`, `classes`, `seed`, `split`) always gives the same bytes.
pub fn synthetic(n: usize, classes: usize, seed: u64, split: &str) -> Dataset {
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    let tau = std::f64::consts::TAU;
    for i in 0..n {
        let c = i % classes;
        let mut rng = Rng::for_stream(seed, &format!("synthetic/{split}/{i}"));
        let angle = std::f64::consts::PI * c as f64 / classes as f64;
        let freq = 2.0 + (c % 3) as f64;
        let phase = rng.uniform(0.0, tau);
        let contrast = rng.uniform(40.0, 80.0);
        let (dx, dy) = (angle.cos(), angle.sin());
        for ch in 0..3 {
            let colour = 0.6 + 0.4 * (tau * (c as f64 / classes as f64 + ch as f64 / 3.0)).cos();
            for y in 0..32 {
                for x in 0..32 {
                    let wave = (tau * freq * (x as f64 * dx + y as f64 * dy) / 32.0 + phase).sin();
                    let v = 128.0 + contrast * colour * wave + 20.0 * rng.normal();
                    images.push(v.round().clamp(0.0, 255.0) as u8);
                }
            }
        }
        labels.push(c as u8);
    }
    Dataset {
        images,
        labels,
        classes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_balanced_and_split_dependent() {
        let a = synthetic(50, 10, 1, "train");
        assert_eq!(a, synthetic(50, 10, 1, "train"));
        assert_ne!(a.images, synthetic(50, 10, 1, "test").images);
        assert_ne!(a.images, synthetic(50, 10, 2, "train").images);
        assert_eq!(a.class_counts(), vec![5; 10]);
        assert_eq!(a.images.len(), 50 * IMAGE_BYTES);
    }

    #[test]
    fn classes_differ_in_their_images() {
        // Mean absolute difference between class means is far above the noise of the means.
        let d = synthetic(200, 10, 3, "train");
        let mean = |c: usize| -> Vec<f64> {
            let idx: Vec<usize> = (0..d.len())
                .filter(|&i| d.labels[i] as usize == c)
                .collect();
            (0..3)
                .map(|ch| {
                    let n = (idx.len() * 1024) as f64;
                    idx.iter()
                        .map(|&i| {
                            d.image(i)[ch * 1024..(ch + 1) * 1024]
                                .iter()
                                .map(|&p| (p as f64 - 128.0).abs())
                                .sum::<f64>()
                        })
                        .sum::<f64>()
                        / n
                })
                .collect()
        };
        let (m0, m5) = (mean(0), mean(5));
        let gap: f64 = m0.iter().zip(&m5).map(|(a, b)| (a - b).abs()).sum();
        assert!(gap > 5.0, "class colour energy differs: {m0:?} vs {m5:?}");
    }
}
