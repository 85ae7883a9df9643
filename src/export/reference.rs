//! Reference data for checking an exported file in another runtime: images in the file's
//! input convention with the logits ablate's own deploy model computes for them.
//!
//! A reference file is a safetensors file with, per image set `S` (`random`: seeded random
//! images; `test`: a run's first test images), `S.input` (float32 `[n, 3, 32, 32]`, exactly
//! what the ONNX file takes) and `S.logits` (float32 `[n, classes]`, ablate's output), and for
//! `test` also `test.labels` (uint32 `[n]`).
//!
//! The logits are computed [`BATCH`] images at a time, so the network's memory is that of one
//! batch whatever the count; [`check_fits`] refuses a count whose file cannot be held in this
//! machine's memory before anything is allocated.

use std::ops::Range;

use candle_core::{Device, Tensor};
use candle_nn::ModuleT;

use crate::config::{check_bytes, ConfigError, ModelSpec};
use crate::data::{transform, Crop, Dataset, IMAGE_BYTES};
use crate::model::Network;
use crate::rng::Rng;

/// Images per forward pass of the reference evaluation.
pub const BATCH: usize = 16;

/// Refuses a reference of `n` images in each of `sets` image sets of `spec` when it cannot fit
/// in this machine's memory: the model at one [`BATCH`] (the floor training checks), then the
/// sets themselves (pixel bytes, the float32 input tensors, the logits and the serialised file
/// holding both again). Decided before anything is allocated.
pub fn check_fits(spec: &ModelSpec, n: usize, sets: usize) -> Result<(), ConfigError> {
    crate::config::check_fits(spec, BATCH.min(n))?;
    let input = 4 * IMAGE_BYTES as u128;
    let logits = 4 * spec.classes as u128;
    let per_image = IMAGE_BYTES as u128 + 2 * (input + logits);
    let images = n as u128 * sets as u128;
    let gb = |b: u128| b as f64 / 1e9;
    check_bytes(
        "--reference-images",
        &format!("a reference of {n} images per set ({sets} sets)"),
        images * per_image,
        &format!(
            "input {:.1}, logits {:.1}, each twice with the file",
            gb(images * input),
            gb(images * logits)
        ),
    )
}

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

/// `(normalised, input)` for `images` (channel-major bytes, image after image): the images as
/// the network takes them (normalised, the test-time transform) and as the ONNX file takes
/// them (the same, or only scaled to [0, 1] with `normalize_input`).
pub fn inputs(images: &[u8], normalize_input: bool) -> candle_core::Result<(Tensor, Tensor)> {
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
    let input = if normalize_input {
        let scaled: Vec<f32> = images.iter().map(|&v| v as f32 / 255.0).collect();
        Tensor::from_vec(scaled, shape, &Device::Cpu)?
    } else {
        x.clone()
    };
    Ok((x, input))
}

/// `(input, logits)` for `images` (channel-major bytes, image after image): `input` is what the
/// ONNX file takes ([`inputs`]), `logits` what `net` computes from the normalised images in
/// eval mode, [`BATCH`] images at a time.
pub fn reference(
    net: &Network,
    images: &[u8],
    normalize_input: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (x, input) = inputs(images, normalize_input)?;
    Ok((input, logits(net, &x)?))
}

/// What `net` computes from the normalised images `x` in eval mode, [`BATCH`] at a time.
pub fn logits(net: &Network, x: &Tensor) -> candle_core::Result<Tensor> {
    in_batches(x.dim(0)?, BATCH, |r| {
        net.forward_t(&x.narrow(0, r.start, r.len())?, false)
    })
}

/// Percent of the rows of `logits` whose argmax (the first, on a tie) is the row's label.
pub fn top1(logits: &Tensor, labels: &[u32]) -> candle_core::Result<f64> {
    let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
    if predicted.len() != labels.len() || labels.is_empty() {
        candle_core::bail!(
            "{} predictions for {} labels",
            predicted.len(),
            labels.len()
        );
    }
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(100.0 * right as f64 / labels.len() as f64)
}

/// `f` over `0..n` in consecutive ranges of at most `batch` (> 0) items, its results
/// concatenated along dim 0. Each result is detached from the graph that computed it, so that
/// one batch's intermediate tensors are freed before the next batch runs.
pub fn in_batches(
    n: usize,
    batch: usize,
    mut f: impl FnMut(Range<usize>) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    if n == 0 || batch == 0 {
        candle_core::bail!("a reference needs at least one image and a batch of at least one");
    }
    let parts = (0..n)
        .step_by(batch)
        .map(|start| Ok(f(start..(start + batch).min(n))?.detach()))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&parts, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// The batches cover `0..n` in order, none larger than the batch, and what comes back
    /// keeps no graph alive (a graph per batch, held to the end, is what grew without bound).
    #[test]
    fn batches_are_bounded_and_detached() {
        let weight = Var::new(&[2f32], &Device::Cpu).unwrap();
        let mut seen = Vec::new();
        let out = in_batches(37, 16, |r| {
            seen.push(r.clone());
            let x = Tensor::arange(r.start as f32, r.end as f32, &Device::Cpu)?;
            x.broadcast_mul(weight.as_tensor())
        })
        .unwrap();
        assert_eq!(seen, [0..16, 16..32, 32..37]);
        assert!(
            !out.track_op(),
            "the result holds the graphs of its batches"
        );
        let want: Vec<f32> = (0..37).map(|i| 2.0 * i as f32).collect();
        assert_eq!(out.to_vec1::<f32>().unwrap(), want);
        assert!(in_batches(0, 16, |_| unreachable!()).is_err());
    }

    /// Batched logits are the logits of each image on its own.
    #[test]
    fn batched_logits_match_one_image_at_a_time() {
        let spec = crate::config::ModelSource::parse("condensenext")
            .resolve(&["stages=[1,1,1]".to_string()])
            .unwrap()
            .spec;
        let mut net = Network::seeded(&spec, 1, &Device::Cpu).unwrap();
        net.finish_pruning().unwrap();
        let net = net.condense().unwrap();
        let n = BATCH + 3;
        let images = random_images(n, 4);
        let (input, logits) = reference(&net, &images, false).unwrap();
        assert_eq!(logits.dims(), &[n, spec.classes]);
        for i in [0, BATCH - 1, BATCH, n - 1] {
            let one = net
                .forward_t(&input.narrow(0, i, 1).unwrap(), false)
                .unwrap();
            let diff = (one - logits.narrow(0, i, 1).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "image {i}: {diff}");
        }
    }

    /// A count whose file alone needs more than any machine has is refused before anything is
    /// allocated, naming the flag.
    #[test]
    fn a_count_beyond_memory_is_refused() {
        let spec = crate::config::preset("condensenext").unwrap();
        let e = check_fits(&spec, 1 << 40, 2).unwrap_err().to_string();
        assert!(e.contains("--reference-images"), "{e}");
        check_fits(&spec, 64, 2).unwrap();
    }
}
