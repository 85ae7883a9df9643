//! The live inputs of a learned-group 1x1 conv, group by group: what the live conv of
//! [`super::StageConv::Live`] reads.

use std::sync::Arc;

use candle_core::Result;

const OP: &str = "live inputs";

/// The inputs each group of a learned-group 1x1 conv reads. Output channel `o` belongs to
/// group `o mod groups`; every group reads the same number of inputs (a learned-group layer
/// drops the same count from each), each group's in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInputs {
    cin: usize,
    /// Inputs per group.
    per_group: usize,
    /// `groups * per_group` input channels, group by group.
    live: Arc<[u32]>,
}

impl GroupInputs {
    /// From each group's live flags over the `Cin` inputs (`kept[g][j]`). Fails unless every
    /// group keeps the same positive number of inputs.
    pub fn from_kept(kept: &[Vec<bool>]) -> Result<Self> {
        let cin = kept.first().map_or(0, Vec::len);
        let live: Vec<Vec<u32>> = kept
            .iter()
            .map(|k| (0..cin).filter(|&j| k[j]).map(|j| j as u32).collect())
            .collect();
        let per_group = live.first().map_or(0, Vec::len);
        if per_group == 0
            || live.iter().any(|l| l.len() != per_group)
            || kept.iter().any(|k| k.len() != cin)
        {
            candle_core::bail!("{OP}: every group must keep the same positive number of inputs");
        }
        Ok(Self {
            cin,
            per_group,
            live: live.concat().into(),
        })
    }

    /// Input channels of the conv.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Live inputs per group.
    pub fn per_group(&self) -> usize {
        self.per_group
    }

    pub fn groups(&self) -> usize {
        self.live.len() / self.per_group
    }

    /// Group `g`'s live inputs, ascending.
    pub(super) fn of(&self, g: usize) -> &[u32] {
        &self.live[g * self.per_group..(g + 1) * self.per_group]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unequal_groups_are_refused() {
        let kept = vec![vec![true, false, true], vec![true, false, false]];
        assert!(GroupInputs::from_kept(&kept).is_err());
        assert!(GroupInputs::from_kept(&[vec![false, false]]).is_err());
    }
}
