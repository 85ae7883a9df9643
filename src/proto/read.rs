//! The read side: the fields of one encoded message, in file order, without a schema. A field
//! whose bytes run past the message's end, a varint longer than 10 bytes and the group wire
//! types (3, 4; deprecated, never written by [`super::Writer`]) are errors, never a panic.

use super::WireType;

/// Why bytes are not a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {at}")]
    Truncated { at: usize },
    #[error("a varint longer than 10 bytes at byte {at}")]
    LongVarint { at: usize },
    #[error("wire type {wire} (field {field}) at byte {at}")]
    WireType { field: u64, wire: u64, at: usize },
    #[error("field number 0 at byte {at}")]
    FieldZero { at: usize },
}

/// A field's value as the wire holds it; its meaning is the message's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// `int32`, `int64`, `uint*`, `bool`, enums (two's complement for negatives).
    Varint(u64),
    /// `double`, `fixed64`: the little-endian bits.
    Fixed64(u64),
    /// `string`, `bytes`, nested messages, packed repeated scalars.
    Bytes(&'a [u8]),
    /// `float`, `fixed32`: the little-endian bits.
    Fixed32(u32),
}

impl<'a> FieldValue<'a> {
    /// The bytes of a length-delimited field.
    pub fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn varint(self) -> Option<u64> {
        match self {
            Self::Varint(v) => Some(v),
            _ => None,
        }
    }

    /// A `double` field's value.
    pub fn double(self) -> Option<f64> {
        match self {
            Self::Fixed64(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    /// A `float` field's value.
    pub fn float(self) -> Option<f32> {
        match self {
            Self::Fixed32(bits) => Some(f32::from_bits(bits)),
            _ => None,
        }
    }
}

/// One field: its number and value.
pub type Field<'a> = (u32, FieldValue<'a>);

/// The fields of the message `bytes`, in order; after the first error it yields nothing more.
pub fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields { bytes, at: 0 }
}

/// Iterator of [`fields`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or(DecodeError::Truncated { at: self.at })?;
            self.at += 1;
            v |= u64::from(byte & 0x7f).wrapping_shl(shift);
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::LongVarint { at: start })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated { at: self.at })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn field(&mut self) -> Result<Field<'a>, DecodeError> {
        let at = self.at;
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(DecodeError::FieldZero { at });
        }
        let field_number =
            u32::try_from(field).map_err(|_| DecodeError::WireType { field, wire, at })?;
        let value = match WireType::of(wire) {
            Some(WireType::Varint) => FieldValue::Varint(self.varint()?),
            Some(WireType::Fixed64) => {
                let b = self.take(8)?;
                FieldValue::Fixed64(u64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            }
            Some(WireType::LengthDelimited) => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { at })?;
                FieldValue::Bytes(self.take(len)?)
            }
            Some(WireType::Fixed32) => {
                let b = self.take(4)?;
                FieldValue::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            None => return Err(DecodeError::WireType { field, wire, at }),
        };
        Ok((field_number, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a bad field can be trusted.
            self.at = self.bytes.len();
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Writer;
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<Field<'_>>, DecodeError> {
        fields(bytes).collect()
    }

    #[test]
    fn reads_back_what_the_writer_writes() {
        let mut w = Writer::new();
        w.int64(1, 150);
        w.int64(2, -1);
        w.double(3, -0.5);
        w.float(4, 2.5);
        w.string(5, "testing");
        w.message(6, |m| m.int64(1, 7));
        w.bool(7, true);
        let bytes = w.into_bytes();
        let got = all(&bytes).unwrap();
        assert_eq!(got.len(), 7);
        assert_eq!(got[0], (1, FieldValue::Varint(150)));
        assert_eq!(got[1], (2, FieldValue::Varint(u64::MAX)));
        assert_eq!(got[2].1.double(), Some(-0.5));
        assert_eq!(got[3].1.float(), Some(2.5));
        assert_eq!(got[4].1.bytes(), Some(&b"testing"[..]));
        let inner = all(got[5].1.bytes().unwrap()).unwrap();
        assert_eq!(inner, [(1, FieldValue::Varint(7))]);
        assert_eq!(got[6], (7, FieldValue::Varint(1)));
    }

    #[test]
    fn damaged_messages_are_errors_not_panics() {
        // A string whose length runs past the end.
        assert_eq!(
            all(&[0x12, 0x07, b't']),
            Err(DecodeError::Truncated { at: 2 })
        );
        // A varint that never ends, and one longer than 10 bytes.
        assert_eq!(all(&[0x08, 0x80]), Err(DecodeError::Truncated { at: 2 }));
        assert_eq!(
            all(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::LongVarint { at: 1 })
        );
        // Wire type 3 (a deprecated group) and field number 0.
        assert!(matches!(
            all(&[0x0b]),
            Err(DecodeError::WireType { wire: 3, .. })
        ));
        assert_eq!(all(&[0x00, 0x01]), Err(DecodeError::FieldZero { at: 0 }));
        // A fixed32 cut short, and a length larger than memory.
        assert_eq!(all(&[0x25, 1, 2]), Err(DecodeError::Truncated { at: 1 }));
        let huge = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(all(&huge).is_err());
        // After the first error, nothing.
        assert_eq!(fields(&[0x0b, 0x08, 0x01]).count(), 1);
    }
}
