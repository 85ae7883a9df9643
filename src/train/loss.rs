//! Losses: softmax cross-entropy and the class-balanced sigmoid focal loss (spec section 6).

use candle_core::{DType, Device, Result, Tensor};

/// Mean softmax cross-entropy of `logits [N, C]` against `targets [N]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Settings of the class-balanced focal loss (Cui et al. 2019).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocalConfig {
    /// beta of the effective number of samples, in [0, 1).
    pub beta: f64,
    /// Focusing exponent gamma >= 0.
    pub gamma: f64,
}

impl Default for FocalConfig {
    fn default() -> Self {
        Self {
            beta: 0.9999,
            gamma: 1.0,
        }
    }
}

/// Class weights `a_y = (1 - beta) / (1 - beta^n_y)`, normalised to sum to the number of
/// classes. A class with no sample gets weight 0. On balanced data every weight is 1.
pub fn class_balanced_weights(counts: &[usize], beta: f64) -> Vec<f64> {
    let raw: Vec<f64> = counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else if beta == 0.0 {
                1.0
            } else {
                (1.0 - beta) / (1.0 - beta.powi(n as i32))
            }
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| w * counts.len() as f64 / sum).collect()
}

/// `log(1 + exp(x))`, stable for any x.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// Class-balanced sigmoid focal loss of `logits [N, C]` against `targets [N]` (u32), with
/// `weights[c]` the class weights: per sample and class, with `p = sigmoid(z)`, `pt = p` for
/// the true class and `1 - p` otherwise, `a_y * (1 - pt)^gamma * -log(pt)`; summed over classes,
/// averaged over the batch. Computed from logits with `s = z` (true class) or `-z`:
/// `-log(pt) = softplus(-s)` and `(1 - pt)^gamma = exp(-gamma * softplus(s))`.
pub fn focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    weights: &[f64],
    gamma: f64,
) -> Result<Tensor> {
    focal_loss_with(
        logits,
        targets,
        &class_weight_tensor(weights, logits.device())?,
        gamma,
    )
}

/// The class weights as the `[C]` tensor [`focal_loss_with`] takes, on `device` (made once
/// per run: the loss then never copies anything between host and device).
pub fn class_weight_tensor(weights: &[f64], device: &Device) -> Result<Tensor> {
    let w: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
    Tensor::from_vec(w, weights.len(), device)
}

/// [`focal_loss`] with the class weights as a `[C]` tensor on the logits' device
/// ([`class_weight_tensor`]); the signs and per-sample weights are built on that device from
/// `targets`, so no step reads the targets back to the host.
pub fn focal_loss_with(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    gamma: f64,
) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    let dev = logits.device();
    let targets = targets.to_dtype(DType::U32)?;
    let classes = Tensor::arange(0u32, c as u32, dev)?.unsqueeze(0)?;
    let is_true = targets.unsqueeze(1)?.broadcast_eq(&classes)?; // [N, C] u8
    let sign = ((is_true.to_dtype(logits.dtype())? * 2.0)? - 1.0)?;
    let alpha = weights
        .to_dtype(logits.dtype())?
        .index_select(&targets, 0)?
        .reshape((n, 1))?;
    let s = (logits * sign)?;
    let nll = softplus(&s.neg()?)?;
    let per = if gamma == 0.0 {
        nll
    } else {
        ((softplus(&s)? * -gamma)?.exp()? * nll)?
    };
    per.broadcast_mul(&alpha)?.sum_all()? / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn logits(values: &[f64], n: usize, c: usize) -> Var {
        Var::from_tensor(&Tensor::from_vec(values.to_vec(), (n, c), &Device::Cpu).unwrap()).unwrap()
    }

    /// The loss written element by element in plain floats.
    fn naive(z: &[f64], t: &[u32], c: usize, w: &[f64], gamma: f64) -> f64 {
        let mut total = 0.0;
        for (i, &y) in t.iter().enumerate() {
            for j in 0..c {
                let p = 1.0 / (1.0 + (-z[i * c + j]).exp());
                let pt = if j == y as usize { p } else { 1.0 - p };
                total += w[y as usize] * (1.0 - pt).powf(gamma) * -pt.ln();
            }
        }
        total / t.len() as f64
    }

    #[test]
    fn balanced_weights_are_one_and_skewed_ones_favour_rare_classes() {
        assert!(class_balanced_weights(&[5000; 10], 0.9999)
            .iter()
            .all(|w| (w - 1.0).abs() < 1e-12));
        let w = class_balanced_weights(&[1000, 10], 0.999);
        assert!(w[1] > w[0] && (w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn focal_loss_value_and_gradient() {
        let (n, c) = (3, 4);
        let z = [
            0.3, -1.2, 2.5, 0.0, -30.0, 4.0, 0.7, -0.1, 1.1, 1.0, -2.0, 25.0,
        ];
        let t = [2u32, 0, 3];
        let w = [0.5, 1.5, 1.0, 1.0];
        let targets = Tensor::new(&t, &Device::Cpu).unwrap();
        for gamma in [0.0, 1.0, 2.0] {
            let v = logits(&z, n, c);
            let loss = focal_loss(v.as_tensor(), &targets, &w, gamma).unwrap();
            let got = loss.to_scalar::<f64>().unwrap();
            let want = naive(&z, &t, c, &w, gamma);
            assert!(
                (got - want).abs() < 1e-9 * want.abs().max(1.0),
                "gamma {gamma}: {got} vs {want}"
            );
            let grad: Vec<f64> = loss
                .backward()
                .unwrap()
                .get(&v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for k in 0..z.len() {
                let eps = 1e-6;
                let (mut up, mut down) = (z, z);
                up[k] += eps;
                down[k] -= eps;
                let fd =
                    (naive(&up, &t, c, &w, gamma) - naive(&down, &t, c, &w, gamma)) / (2.0 * eps);
                assert!(
                    (grad[k] - fd).abs() < 1e-6 * fd.abs().max(1.0),
                    "gamma {gamma}, logit {k}: {} vs {fd}",
                    grad[k]
                );
            }
        }
    }

    #[test]
    fn focal_loss_is_finite_for_extreme_logits() {
        let v = logits(&[1e4, -1e4, 0.0, -1e4, 1e4, 0.0], 2, 3);
        let targets = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let loss = focal_loss(v.as_tensor(), &targets, &[1.0; 3], 1.0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(loss.is_finite() && loss > 1e3, "{loss}");
    }
}
