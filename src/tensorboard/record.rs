//! TFRecord framing, the container of an event file: each record is
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC-32C of those 8 bytes
//! length bytes of data       | u32 masked CRC-32C of the data
//! ```
//!
//! [`frame`] writes one; [`records`] reads them back as TensorBoard's reader does: in order,
//! each checked, stopping at the first record that is cut short or whose CRC is wrong.

use super::crc32c::masked_crc32c;

/// Bytes of framing around a record's data.
pub const OVERHEAD: usize = 8 + 4 + 4;

/// `data` framed as one record.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + OVERHEAD);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Why reading records stopped before the end of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end inside a record: what a writer leaves when it is killed mid-write.
    #[error("a record cut short at byte {at}")]
    Truncated { at: usize },
    #[error("the length CRC of the record at byte {at} is wrong")]
    LengthCrc { at: usize },
    #[error("the data CRC of the record at byte {at} is wrong")]
    DataCrc { at: usize },
}

/// The records of `bytes`, in order; after the first error it yields nothing more.
pub fn records(bytes: &[u8]) -> Records<'_> {
    Records { bytes, at: 0 }
}

/// Iterator of [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<&'a [u8], RecordError> {
        let at = self.at;
        let rest = &self.bytes[at..];
        let truncated = RecordError::Truncated { at };
        let header = rest.get(..12).ok_or(truncated.clone())?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc32c(len_bytes).to_le_bytes() != len_crc {
            return Err(RecordError::LengthCrc { at });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(len_bytes);
        let data_end = usize::try_from(u64::from_le_bytes(len))
            .ok()
            .and_then(|n| n.checked_add(12))
            .ok_or(truncated.clone())?;
        let data = rest.get(12..data_end).ok_or(truncated.clone())?;
        let crc = rest.get(data_end..data_end + 4).ok_or(truncated)?;
        if masked_crc32c(data).to_le_bytes() != crc {
            return Err(RecordError::DataCrc { at });
        }
        self.at += data_end + 4;
        Ok(data)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let record = self.next_record();
        if record.is_err() {
            self.at = self.bytes.len();
        }
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Vec<Result<&[u8], RecordError>> {
        records(bytes).collect()
    }

    /// Two events framed by TensorBoard's own writer (`tensorboard.summary.writer.record_writer.
    /// RecordWriter` of tensorboard 2.21.0, the protobufs from its `compat.proto`): the file
    /// version at wall time 1.5, then `test/top1` = 12.25 at step 3, wall time 2.0.
    const TENSORBOARD_WROTE: [u8; 87] = [
        0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa3, 0x7f, 0x4b, 0x22, 0x09, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, 0x1a, 0x0d, 0x62, 0x72, 0x61, 0x69, 0x6e, 0x2e, 0x45,
        0x76, 0x65, 0x6e, 0x74, 0x3a, 0x32, 0x2a, 0x28, 0x64, 0x6c, 0x1f, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x51, 0x4b, 0x44, 0x18, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x40, 0x10, 0x03, 0x2a, 0x12, 0x0a, 0x10, 0x0a, 0x09, 0x74, 0x65, 0x73, 0x74, 0x2f, 0x74,
        0x6f, 0x70, 0x31, 0x15, 0x00, 0x00, 0x44, 0x41, 0x15, 0xa0, 0x50, 0xf8,
    ];

    #[test]
    fn byte_for_byte_what_tensorboard_writes() {
        use super::super::event::{Event, Value};
        let mut ours = frame(&Event::file_version(1.5).encode());
        ours.extend(frame(
            &Event::summary(2.0, 3, vec![Value::scalar("test/top1", 12.25)]).encode(),
        ));
        assert_eq!(ours, TENSORBOARD_WROTE);
        let back: Vec<&[u8]> = records(&TENSORBOARD_WROTE).map(Result::unwrap).collect();
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn framed_records_read_back() {
        let mut file = frame(b"first");
        file.extend(frame(b""));
        file.extend(frame(&[7u8; 300]));
        let got = read(&file);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(&b"first"[..]));
        assert_eq!(got[1], Ok(&b""[..]));
        assert_eq!(got[2], Ok(&[7u8; 300][..]));
        assert_eq!(file.len(), 5 + 0 + 300 + 3 * OVERHEAD);
    }

    /// Every single flipped bit of a record is caught, by one of its two CRCs.
    #[test]
    fn any_flipped_bit_is_caught() {
        let file = frame(b"an epoch's scalars");
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut damaged = file.clone();
                damaged[byte] ^= 1 << bit;
                let got = read(&damaged);
                assert_eq!(got.len(), 1, "byte {byte} bit {bit}");
                assert!(got[0].is_err(), "byte {byte} bit {bit} went unnoticed");
            }
        }
    }

    /// A writer killed mid-record leaves a cut-short record: the whole records before it read.
    #[test]
    fn a_cut_short_record_ends_the_file() {
        let mut file = frame(b"whole");
        let whole = file.len();
        file.extend(frame(b"cut short"));
        for cut in whole + 1..file.len() {
            let got = read(&file[..cut]);
            assert_eq!(
                got,
                [Ok(&b"whole"[..]), Err(RecordError::Truncated { at: whole })]
            );
        }
        // A length CRC that checks but a length past the end is cut short, not a panic.
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend(masked_crc32c(&huge).to_le_bytes());
        assert_eq!(read(&huge), [Err(RecordError::Truncated { at: 0 })]);
    }
}
