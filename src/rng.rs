//! The project's own seeded random numbers.
//!
//! candle cannot seed its CPU generator, so everything random that must be reproducible
//! (weight initialisation, dropout noise, later augmentation) draws from here instead.

/// SplitMix64: tiny, fast, and every seed gives a full-period stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one named stream: independent of the order in which streams are made.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        Self::new(mix(seed ^ fnv1a(stream.as_bytes())))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// The generator `n` draws ahead: what `n` calls of [`Rng::next_u64`] would leave, in
    /// constant time (so a long stream can be drawn in parallel pieces).
    pub fn ahead(&self, n: u64) -> Self {
        Self::new(self.state.wrapping_add(n.wrapping_mul(GAMMA)))
    }

    /// The `i`-th draw from here (`i = 0` is what [`Rng::next_u64`] returns next), without
    /// moving: a pure function of `i`, so a loop over many draws vectorises.
    #[inline(always)]
    pub fn draw(&self, i: u64) -> u64 {
        mix(self
            .state
            .wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Standard normal by Box-Muller (one value per call; the second is discarded for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// SplitMix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_stream(7, "a");
                move |_| r.next_u64()
            })
            .collect();
        let a2: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_stream(7, "a");
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::for_stream(7, "b");
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, a2);
        assert_ne!(a, b);
    }

    #[test]
    fn ahead_skips_exactly_n_draws() {
        let mut r = Rng::for_stream(3, "s");
        let skipped = r.ahead(1000);
        for _ in 0..1000 {
            r.next_u64();
        }
        assert_eq!(r, skipped);
        assert_eq!(r.clone().next_u64(), skipped.clone().next_u64());
    }

    #[test]
    fn draw_is_the_stream_in_place() {
        let r = Rng::for_stream(5, "d");
        let mut walk = r.clone();
        for i in 0..100 {
            assert_eq!(r.draw(i), walk.next_u64());
        }
        assert_eq!(r.ahead(37).draw(3), r.draw(40));
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(1);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }
}
