//! Channel gathers: `y[:, j] = x[:, index[j]]` as whole-plane copies, and the backward as
//! whole-plane sums, each input channel's in ascending `j` order. Covers the condensed
//! layers' index-select (repeats allowed) and the channel shuffle (a permutation).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::{by_dtype, dims4, filled, slice};

/// `y[:, j] = x[:, index[j]]` for `x: [N, C, H, W]`.
pub fn select_channels(x: &Tensor, index: &ChannelIndex) -> Result<Tensor> {
    let c = x.dim(1)?;
    if let Some(&bad) = index.index.iter().find(|&&i| i as usize >= c) {
        candle_core::bail!("select_channels: channel {bad} of an input with {c}");
    }
    x.contiguous()?.apply_op1(Select(index.clone()))
}

/// A channel index with, for the backward pass, the outputs each input channel feeds.
#[derive(Debug, Clone)]
pub struct ChannelIndex {
    index: Arc<[u32]>,
}

impl ChannelIndex {
    pub fn new(index: Vec<u32>) -> Self {
        Self {
            index: index.into(),
        }
    }

    /// The permutation of a channel shuffle of `channels` in `groups` groups: view
    /// `(groups, channels / groups)`, transpose, flatten.
    pub fn shuffle(channels: usize, groups: usize) -> Self {
        let per = channels / groups;
        Self::new(
            (0..channels)
                .map(|i| ((i % groups) * per + i / groups) as u32)
                .collect(),
        )
    }

    pub fn to_vec(&self) -> Vec<u32> {
        self.index.to_vec()
    }
}

#[derive(Debug, Clone)]
struct Select(ChannelIndex);

/// The backward of [`Select`]: input channels `cin`.
#[derive(Debug, Clone)]
struct SelectGrad {
    index: ChannelIndex,
    cin: usize,
}

fn gather<T: WithDType>(x: &[T], [n, c, h, w]: [usize; 4], index: &[u32]) -> Vec<T> {
    let (plane, k) = (h * w, index.len());
    // SAFETY: each plane's closure writes all of its plane.
    unsafe {
        filled(n * k * plane, plane, true, |p, out| {
            let (img, j) = (p / k, p % k);
            let src = (img * c + index[j] as usize) * plane;
            for (o, &v) in out.iter_mut().zip(&x[src..src + plane]) {
                o.write(v);
            }
        })
    }
}

fn scatter<T: WithDType>(dy: &[T], [n, k, h, w]: [usize; 4], index: &[u32], cin: usize) -> Vec<T> {
    let plane = h * w;
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); cin];
    for (j, &i) in index.iter().enumerate() {
        feeds[i as usize].push(j);
    }
    let mut dx = vec![T::from_f64(0.0); n * cin * plane];
    dx.par_chunks_mut(plane).enumerate().for_each(|(p, out)| {
        let (img, ch) = (p / cin, p % cin);
        for &j in &feeds[ch] {
            let src = &dy[(img * k + j) * plane..][..plane];
            for (o, s) in out.iter_mut().zip(src) {
                *o += *s;
            }
        }
    });
    dx
}

fn run_gather<T: WithDType>(s: &CpuStorage, l: &Layout, index: &[u32]) -> Result<Vec<T>> {
    Ok(gather(
        slice::<T>(s, l, "select_channels")?,
        dims4(l, "select_channels")?,
        index,
    ))
}

fn run_scatter<T: WithDType>(
    s: &CpuStorage,
    l: &Layout,
    index: &[u32],
    cin: usize,
) -> Result<Vec<T>> {
    Ok(scatter(
        slice::<T>(s, l, "select_channels")?,
        dims4(l, "select_channels")?,
        index,
        cin,
    ))
}

impl CustomOp1 for Select {
    fn name(&self) -> &'static str {
        "select-channels"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [n, _, h, w] = dims4(l, "select_channels")?;
        let index = &self.0.index;
        let y = by_dtype!("select_channels", s, run_gather(s, l, index));
        Ok((y, Shape::from((n, index.len(), h, w))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let op = SelectGrad {
            index: self.0.clone(),
            cin: x.dim(1)?,
        };
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for SelectGrad {
    fn name(&self) -> &'static str {
        "select-channels-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [n, _, h, w] = dims4(l, "select_channels")?;
        let (index, cin) = (&self.index.index, self.cin);
        let dx = by_dtype!("select_channels", s, run_scatter(s, l, index, cin));
        Ok((dx, Shape::from((n, cin, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{max_diff, random};
    use crate::rng::Rng;
    use candle_core::{DType, Device, Var};

    /// Forward and gradient against candle's index_select, with repeated and unused channels,
    /// and the shuffle against candle's reshape-transpose-reshape.
    #[test]
    fn matches_candle_index_select_and_shuffle() {
        let mut rng = Rng::new(9);
        for dtype in [DType::F32, DType::F64] {
            let x = Var::from_tensor(&random(&mut rng, &[3, 5, 4, 2], dtype)).unwrap();
            let picks = vec![4u32, 0, 0, 2, 4, 4, 1];
            let index = ChannelIndex::new(picks.clone());
            let t = Tensor::from_vec(picks, 7, &Device::Cpu).unwrap();
            let ours = select_channels(&x, &index).unwrap();
            let theirs = x.index_select(&t, 1).unwrap();
            assert_eq!(max_diff(&ours, &theirs), 0.0);
            let up = random(&mut rng, ours.dims(), dtype);
            let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert!(max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap()) < 1e-6);

            let x = Var::from_tensor(&random(&mut rng, &[2, 12, 3, 3], dtype)).unwrap();
            let ours = select_channels(&x, &ChannelIndex::shuffle(12, 4)).unwrap();
            let theirs = x
                .reshape((2, 4, 3, 3, 3))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((2, 12, 3, 3))
                .unwrap();
            assert_eq!(max_diff(&ours, &theirs), 0.0);
            let up = random(&mut rng, ours.dims(), dtype);
            let go = (ours * &up).unwrap().sum_all().unwrap().backward().unwrap();
            let gt = (theirs * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_eq!(max_diff(go.get(&x).unwrap(), gt.get(&x).unwrap()), 0.0);
        }
    }

    #[test]
    fn out_of_range_channel_is_an_error() {
        let x = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let e = select_channels(&x, &ChannelIndex::new(vec![0, 3])).unwrap_err();
        assert!(
            e.to_string().contains("channel 3 of an input with 3"),
            "{e}"
        );
    }
}
