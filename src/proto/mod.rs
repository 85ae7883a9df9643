//! The protobuf wire format, hand-written: no `protoc`, no codegen, no schema. The ONNX
//! exporter ([`crate::export`]) and the TensorBoard event files ([`crate::tensorboard`]) encode
//! their messages with [`Writer`]; the event files are read back (to resume without writing a
//! step twice, and in tests) with [`fields`].
//!
//! - [`write`]: [`Writer`], the field kinds those messages use.
//! - [`read`]: [`fields`], a message's fields in file order, each checked against the bytes.

pub mod read;
pub mod write;

pub use read::{fields, DecodeError, Field, FieldValue};
pub use write::Writer;

/// Wire types of the protobuf encoding (the low 3 bits of a field's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum WireType {
    Varint = 0,
    Fixed64 = 1,
    LengthDelimited = 2,
    Fixed32 = 5,
}

impl WireType {
    fn of(bits: u64) -> Option<Self> {
        Some(match bits {
            0 => Self::Varint,
            1 => Self::Fixed64,
            2 => Self::LengthDelimited,
            5 => Self::Fixed32,
            _ => return None,
        })
    }
}
