//! Reference data for checking an exported file in another runtime: images in the file's
//! input convention with the logits ablate's own deploy model computes for them.
//!
//! A reference file is a safetensors file with, per image set `S` (`random`: seeded random
//! images; `test`: a run's first test images), `S.input` (float32 `[n, 3, 32, 32]`, exactly
//! what the ONNX file takes) and `S.logits` (float32 `[n, classes]`, ablate's output), and for
//! `test` also `test.labels` (uint32 `[n]`).

use candle_core::{Device, Tensor};
use candle_nn::ModuleT;

use crate::data::{transform, Crop, Dataset, IMAGE_BYTES};
use crate::model::Network;
use crate::rng::Rng;

/// `n` images of uniformly random bytes, from the project's seeded generator.
pub fn random_images(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::for_stream(seed, "export/reference");
    (0..n * IMAGE_BYTES).map(|_| rng.next_u64() as u8).collect()
}

/// The first `n` images of `data` (all if fewer) and their labels.
pub fn first_images(data: &Dataset, n: usize) -> (Vec<u8>, Vec<u32>) {
    let n = n.min(data.len());
    (
        data.images[..n * IMAGE_BYTES].to_vec(),
        data.labels[..n].iter().map(|&l| l as u32).collect(),
    )
}

/// `(input, logits)` for `images` (channel-major bytes, image after image): `input` is what the
/// ONNX file takes (normalised, or only scaled to [0, 1] with `normalize_input`), `logits` what
/// `net` computes from the normalised images in eval mode.
pub fn reference(
    net: &Network,
    images: &[u8],
    normalize_input: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let n = images.len() / IMAGE_BYTES;
    let mut normalised = vec![0f32; images.len()];
    for (src, out) in images
        .chunks(IMAGE_BYTES)
        .zip(normalised.chunks_mut(IMAGE_BYTES))
    {
        transform(src, Crop::CENTER, out);
    }
    let shape = (n, 3, 32, 32);
    let x = Tensor::from_vec(normalised, shape, &Device::Cpu)?;
    let logits = net.forward_t(&x, false)?;
    let input = if normalize_input {
        let scaled: Vec<f32> = images.iter().map(|&v| v as f32 / 255.0).collect();
        Tensor::from_vec(scaled, shape, &Device::Cpu)?
    } else {
        x
    };
    Ok((input, logits))
}
