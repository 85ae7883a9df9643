//! SGD with Nesterov momentum and weight decay (candle-nn's SGD has neither), and the
//! per-iteration cosine learning rate.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// The recipe of spec section 6: Nesterov momentum 0.9, weight decay 1e-4.
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
        }
    }
}

/// PyTorch's SGD update, per parameter `w` with gradient `g`:
/// `d = g + wd*w`; `buf = d` on the first step, else `buf = m*buf + d`;
/// `step = d + m*buf` (Nesterov) or `buf`; `w -= lr*step`.
#[derive(Debug)]
pub struct Sgd {
    cfg: SgdConfig,
    params: Vec<(String, Var)>,
    /// Momentum buffer per parameter, made by its first step.
    momentum: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, cfg: SgdConfig) -> Self {
        let momentum = vec![None; params.len()];
        Self {
            cfg,
            params,
            momentum,
        }
    }

    /// The momentum buffer of the parameter called `name`, if it has one.
    pub fn momentum(&self, name: &str) -> Option<Tensor> {
        self.params
            .iter()
            .position(|(n, _)| n == name)
            .and_then(|i| self.momentum[i].clone())
    }

    /// Sets the buffer of `name` (restoring a checkpoint); unknown names are ignored.
    pub fn set_momentum(&mut self, name: &str, buffer: Tensor) {
        if let Some(i) = self.params.iter().position(|(n, _)| n == name) {
            self.momentum[i] = Some(buffer);
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let SgdConfig {
            momentum: m,
            weight_decay: wd,
            nesterov,
        } = self.cfg;
        for ((_, w), buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some(g) = grads.get(w) else { continue };
            // Detached: arithmetic on a Var records a backprop graph, and a momentum buffer
            // built from one would keep every earlier step's tensors alive.
            let (g, wt) = (g.detach(), w.as_tensor().detach());
            let d = if wd != 0.0 { (&g + (&wt * wd)?)? } else { g };
            let update = if m != 0.0 {
                let b = match buf.take() {
                    Some(b) => ((b * m)? + &d)?,
                    None => d.clone(),
                };
                let update = if nesterov {
                    (&d + (&b * m)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
                update
            } else {
                d
            };
            w.set(&(wt - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// `0.5 * lr * (1 + cos(pi * t))` for progress `t` in [0, 1].
pub fn cosine_lr(lr: f64, t: f64) -> f64 {
    0.5 * lr * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cosine_endpoints() {
        assert_eq!(cosine_lr(0.1, 0.0), 0.1);
        assert!((cosine_lr(0.1, 0.5) - 0.05).abs() < 1e-12);
        assert!(cosine_lr(0.1, 1.0).abs() < 1e-12);
    }

    /// Three steps on f(w) = sum(w^2)/2 (gradient w), against the update written by hand.
    #[test]
    fn nesterov_with_weight_decay_matches_pytorch() {
        let w = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let mut sgd = Sgd::new(vec![("w".into(), w.clone())], SgdConfig::default());
        let (lr, m, wd) = (0.1, 0.9, 1e-4);
        let mut expect = [1.0f64, -2.0];
        let mut buf: Option<[f64; 2]> = None;
        for _ in 0..3 {
            let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
            sgd.step(&loss.backward().unwrap(), lr).unwrap();
            let d = expect.map(|x| x + wd * x);
            let b = match buf {
                Some(b) => [m * b[0] + d[0], m * b[1] + d[1]],
                None => d,
            };
            buf = Some(b);
            expect = [
                expect[0] - lr * (d[0] + m * b[0]),
                expect[1] - lr * (d[1] + m * b[1]),
            ];
        }
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        for (g, e) in got.iter().zip(expect) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
        assert!(sgd.momentum("w").is_some());
    }
}
