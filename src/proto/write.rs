//! The write side: the field kinds the ONNX and TensorBoard messages use. No schema, no
//! reflection: each message encodes its own fields by number.
//!
//! Invariants: fields are written in the order the caller writes them (any order is valid
//! protobuf); repeated scalars are written unpacked (one key per element), which every parser
//! must accept for proto2 and proto3 alike; a nested message is length-delimited.

use super::WireType;

/// An encoded message under construction.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: WireType) {
        debug_assert!(field >= 1, "protobuf field numbers start at 1");
        self.varint(((field as u64) << 3) | wire as u64);
    }

    /// An `int64` / `int32` / enum field: a varint of the two's complement (10 bytes when
    /// negative, as protobuf specifies for `int32` too).
    pub fn int64(&mut self, field: u32, v: i64) {
        self.key(field, WireType::Varint);
        self.varint(v as u64);
    }

    /// A `float` field (little-endian IEEE 754, fixed 32 bits).
    pub fn float(&mut self, field: u32, v: f32) {
        self.key(field, WireType::Fixed32);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `double` field (little-endian IEEE 754, fixed 64 bits).
    pub fn double(&mut self, field: u32, v: f64) {
        self.key(field, WireType::Fixed64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `bool` field: a varint 0 or 1.
    pub fn bool(&mut self, field: u32, v: bool) {
        self.key(field, WireType::Varint);
        self.varint(u64::from(v));
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, WireType::LengthDelimited);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A `string` field (UTF-8 bytes).
    pub fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    /// A nested message field, encoded by `body`.
    pub fn message(&mut self, field: u32, body: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::new();
        body(&mut inner);
        self.bytes(field, &inner.buf);
    }

    /// A repeated `int64` field, unpacked.
    pub fn repeated_int64(&mut self, field: u32, values: &[i64]) {
        for &v in values {
            self.int64(field, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        f(&mut w);
        w.into_bytes()
    }

    /// The examples of the protobuf encoding guide.
    #[test]
    fn varints_match_the_protobuf_guide() {
        assert_eq!(encoded(|w| w.int64(1, 150)), [0x08, 0x96, 0x01]);
        assert_eq!(encoded(|w| w.int64(1, 1)), [0x08, 0x01]);
        assert_eq!(encoded(|w| w.int64(1, 0)), [0x08, 0x00]);
        assert_eq!(encoded(|w| w.int64(1, 127)), [0x08, 0x7f]);
        assert_eq!(encoded(|w| w.int64(1, 128)), [0x08, 0x80, 0x01]);
        assert_eq!(
            encoded(|w| w.int64(2, 300)),
            [0x10, 0xac, 0x02],
            "field 2, varint"
        );
    }

    #[test]
    fn negative_integers_take_ten_bytes() {
        assert_eq!(
            encoded(|w| w.int64(1, -1)),
            [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            encoded(|w| w.int64(1, i64::MIN)),
            [0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
        );
    }

    #[test]
    fn large_field_numbers_take_a_multi_byte_key() {
        // Field 20 (AttributeProto.type), varint: key (20 << 3) | 0 = 160 = [0xa0, 0x01].
        assert_eq!(encoded(|w| w.int64(20, 7)), [0xa0, 0x01, 0x07]);
    }

    #[test]
    fn strings_are_length_delimited() {
        assert_eq!(
            encoded(|w| w.string(2, "testing")),
            [0x12, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g']
        );
        assert_eq!(encoded(|w| w.string(1, "")), [0x0a, 0x00]);
    }

    #[test]
    fn doubles_are_fixed64_little_endian_and_bools_varints() {
        assert_eq!(
            encoded(|w| w.double(1, 1.0)),
            [0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]
        );
        assert_eq!(encoded(|w| w.bool(4, true)), [0x20, 0x01]);
        assert_eq!(encoded(|w| w.bool(4, false)), [0x20, 0x00]);
    }

    #[test]
    fn floats_are_fixed32_little_endian() {
        assert_eq!(encoded(|w| w.float(2, 1.0)), [0x15, 0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(
            encoded(|w| w.float(2, -2.5)),
            [0x15, 0x00, 0x00, 0x20, 0xc0]
        );
    }

    /// The guide's nested example: message Test3 { Test1 c = 3; } with c.a = 150.
    #[test]
    fn nested_messages_carry_their_length() {
        assert_eq!(
            encoded(|w| w.message(3, |m| m.int64(1, 150))),
            [0x1a, 0x03, 0x08, 0x96, 0x01]
        );
        // A 200-byte body needs a two-byte length.
        let body = vec![7u8; 200];
        let bytes = encoded(|w| w.message(1, |m| m.bytes(2, &body)));
        assert_eq!(&bytes[..5], &[0x0a, 0xcb, 0x01, 0x12, 0xc8]);
        assert_eq!(bytes.len(), 2 + 1 + 2 + 1 + 200);
    }

    #[test]
    fn repeated_integers_are_unpacked() {
        assert_eq!(
            encoded(|w| w.repeated_int64(8, &[1, 2, 3])),
            [0x40, 0x01, 0x40, 0x02, 0x40, 0x03]
        );
        assert!(encoded(|w| w.repeated_int64(8, &[])).is_empty());
    }
}
