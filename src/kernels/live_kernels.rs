//! The live kernels of a learned-dsc 3x3 conv: what [`super::StageConv::Live3x3`] runs.

use std::sync::Arc;

use candle_core::Result;

use super::simd::Simd;

const OP: &str = "live kernels";

/// Which (output, input) kernels of a 3x3 conv `[cout, cin / groups, 3, 3]` in `groups`
/// groups are live; the others are dropped, read as zero and given no gradient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveKernels {
    cin: usize,
    cout: usize,
    groups: usize,
    /// `kept[o * (cin / groups) + i]`: the kernel of output `o` and input `i` of its group.
    kept: Arc<[bool]>,
    live: usize,
}

impl LiveKernels {
    /// From the flags `kept[o * (cin / groups) + i]`. Fails unless the channels split into the
    /// groups and there is one flag per kernel.
    pub fn new(cin: usize, cout: usize, groups: usize, kept: &[bool]) -> Result<Self> {
        if groups == 0 || cin % groups != 0 || cout % groups != 0 || cin == 0 || cout == 0 {
            candle_core::bail!("{OP}: {cin} -> {cout} channels do not split into {groups} groups");
        }
        if kept.len() != cout * (cin / groups) {
            candle_core::bail!(
                "{OP}: {} flags for {cout} x {} kernels",
                kept.len(),
                cin / groups
            );
        }
        Ok(Self {
            cin,
            cout,
            groups,
            live: kept.iter().filter(|&&k| k).count(),
            kept: kept.into(),
        })
    }

    pub fn cin(&self) -> usize {
        self.cin
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Live kernels.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether the kernel of output `o` and input `i` of its group is live.
    #[inline(always)]
    pub(super) fn is_live(&self, o: usize, i: usize) -> bool {
        self.kept[o * (self.cin / self.groups) + i]
    }

    /// Whether the conv runs over its live kernels only at `simd`, or as the dense conv of the
    /// masked weight: the live-kernel loops cost about 1.07x the dense ones per multiply-add
    /// at AVX-512 and 1.66x at AVX2 (measured alone, on CondenseNeXt's shapes), so they pay
    /// below 85% live (in a whole training step at 89% live they measured 7% slower) and 60%.
    pub fn skips_dropped(&self, simd: Simd) -> bool {
        let all = self.cout * (self.cin / self.groups);
        let limit = if simd >= Simd::Avx512 { 0.85 } else { 0.6 };
        (self.live as f64) < limit * all as f64
    }

    /// Multiply-adds per output position that the conv runs at `simd` (all kernels' where it
    /// runs dense).
    pub fn macs_per_position(&self, simd: Simd) -> usize {
        let kernels = if self.skips_dropped(simd) {
            self.live
        } else {
            self.cout * (self.cin / self.groups)
        };
        9 * kernels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_that_do_not_split_are_refused() {
        assert!(LiveKernels::new(6, 4, 4, &[true; 6]).is_err());
        assert!(LiveKernels::new(4, 4, 2, &[true; 7]).is_err());
        assert!(LiveKernels::new(0, 4, 1, &[]).is_err());
        let k = LiveKernels::new(4, 2, 2, &[true, false, false, false]).unwrap();
        assert_eq!((k.live(), k.groups()), (1, 2));
        assert!(k.is_live(0, 0) && !k.is_live(1, 1));
        assert!(k.skips_dropped(Simd::Avx2) && k.skips_dropped(Simd::Avx512));
        let dense = LiveKernels::new(4, 2, 1, &[true; 8]).unwrap();
        assert!(!dense.skips_dropped(Simd::Avx512));
        assert_eq!(dense.macs_per_position(Simd::Avx2), 72);
        assert_eq!(k.macs_per_position(Simd::Avx512), 9);
    }
}
