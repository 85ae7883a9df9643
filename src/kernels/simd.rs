//! The SIMD level the kernels' loops run at: the widest this CPU has (checked once, at run
//! time), or a narrower one asked for with [`SIMD_ENV`] (to compare the paths, or to get an
//! AVX2 machine's results on an AVX-512 one).
//!
//! [`simd_loops!`] runs a block of element-wise loops compiled for the active level: the
//! block is a closure inlined (it must be: LLVM does not inline a large closure into the
//! `#[target_feature]` function that calls it, and the loops then run as plain SSE2) into a
//! function compiled for AVX2 + FMA or for AVX-512. No operation is fused or reordered by
//! the wider compilation (Rust never contracts `a * b + c` into an FMA on its own, and float
//! sums are not vectorised across iterations), so such loops give the same bits at every
//! level. The hand-written microkernels ([`super::direct3x3`]) choose their own vectors from
//! [`Simd::active`].

use std::sync::atomic::{AtomicU8, Ordering};

/// Environment variable that caps the SIMD level: `portable`, `avx2` or `avx512`.
pub const SIMD_ENV: &str = "ABLATE_SIMD";

/// A SIMD level, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Simd {
    /// The compiler's baseline for the target (SSE2 on x86-64).
    Portable,
    /// AVX2 and FMA: 8 floats a vector, 16 vector registers.
    Avx2,
    /// AVX-512 F, BW, VL and DQ (with AVX2 and FMA): 16 floats a vector, 32 registers.
    Avx512,
}

impl Simd {
    const ALL: [Simd; 3] = [Self::Portable, Self::Avx2, Self::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// The widest level this CPU runs (checked once).
    #[inline(always)]
    pub fn detected() -> Self {
        match DETECTED.load(Ordering::Relaxed) {
            UNSET => {
                let level = Self::detect();
                DETECTED.store(level as u8, Ordering::Relaxed);
                level
            }
            i => Self::ALL[i as usize % Self::ALL.len()],
        }
    }

    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq");
            if avx2 && avx512 {
                return Self::Avx512;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// The level the loops run at now: [`Self::detected`] unless [`set`] capped it.
    #[inline(always)]
    pub fn active() -> Self {
        match ACTIVE.load(Ordering::Relaxed) {
            UNSET => {
                let level = Self::detected();
                ACTIVE.store(level as u8, Ordering::Relaxed);
                level
            }
            i => Self::ALL[i as usize % Self::ALL.len()],
        }
    }
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);
static DETECTED: AtomicU8 = AtomicU8::new(UNSET);

/// Runs the loops at `level` from now on; fails if this CPU lacks it.
pub fn set(level: Simd) -> Result<(), String> {
    let detected = Simd::detected();
    if level > detected {
        return Err(format!(
            "{SIMD_ENV}={}: this CPU runs at most `{}`",
            level.name(),
            detected.name()
        ));
    }
    ACTIVE.store(level as u8, Ordering::Relaxed);
    Ok(())
}

/// Applies [`SIMD_ENV`] if set (an empty value counts as unset); an unknown value or a level
/// this CPU lacks is an error naming it.
pub fn set_from_env() -> Result<(), String> {
    match std::env::var(SIMD_ENV) {
        Ok(v) if !v.is_empty() => match Simd::ALL.iter().find(|l| l.name() == v) {
            Some(&level) => set(level),
            None => Err(format!(
                "{SIMD_ENV}={v}: expected `portable`, `avx2` or `avx512`"
            )),
        },
        _ => Ok(()),
    }
}

/// `f()` inlined into a function compiled for the active level. Call it through
/// [`simd_loops!`], which marks the closure `#[inline(always)]`; a closure that is not
/// inlined runs at the baseline level whatever this function is compiled for.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    at_level(Simd::active(), f)
}

/// `f()` inlined into a function compiled for `level`, which the CPU must have (a level
/// above [`Simd::detected`] runs at the detected one).
#[inline(always)]
pub(crate) fn at_level<R>(level: Simd, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level.min(Simd::detected()) {
            // SAFETY: the CPU has the level.
            Simd::Avx512 => return unsafe { avx512(f) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { avx2(f) },
            Simd::Portable => {}
        }
    }
    let _ = level;
    f()
}

/// `$body` (a block) compiled for the active SIMD level ([`with_simd`]).
macro_rules! simd_loops {
    ($body:block) => {
        $crate::kernels::simd::with_simd(
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use simd_loops;

/// Masks of the first lanes of a vector, for the loops' partial vectors.
#[cfg(target_arch = "x86_64")]
pub(super) mod lanes {
    use std::arch::x86_64::*;

    /// The first `n` of 16 lanes (all 16 from `n = 16` on).
    #[inline(always)]
    pub(in crate::kernels) fn first16(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    }

    /// The first `n` of 8 lanes, each all ones (set) or all zeros.
    ///
    /// # Safety
    /// AVX2 (the caller is compiled for it).
    #[inline(always)]
    pub(in crate::kernels) unsafe fn first8(n: usize) -> __m256i {
        // SAFETY: AVX2 is enabled by the caller.
        unsafe {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_named_once() {
        assert!(Simd::Portable < Simd::Avx2 && Simd::Avx2 < Simd::Avx512);
        for l in Simd::ALL {
            assert_eq!(Simd::ALL.iter().filter(|o| o.name() == l.name()).count(), 1);
        }
        assert!(Simd::active() <= Simd::detected());
    }

    #[test]
    fn a_level_the_cpu_lacks_is_refused() {
        let detected = Simd::detected();
        for l in Simd::ALL.into_iter().filter(|&l| l > detected) {
            assert!(set(l).unwrap_err().contains("this CPU runs at most"));
        }
        assert_eq!(Simd::active(), Simd::active().min(detected));
    }

    /// The same loops at every level the CPU runs give the same bits.
    #[test]
    fn element_wise_loops_give_the_same_bits_at_every_level() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let run = |level: Simd| {
            at_level(
                level,
                #[inline(always)]
                || {
                    x.iter()
                        .map(|&v| (v * 1.3 + 0.2).clamp(0.0, 6.0) * 0.9)
                        .collect::<Vec<f32>>()
                },
            )
        };
        let base = run(Simd::Portable);
        for level in Simd::ALL.into_iter().filter(|&l| l <= Simd::detected()) {
            let got = run(level);
            assert!(
                base.iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{level:?}"
            );
            println!("element-wise loops at {}: same bits", level.name());
        }
    }
}
