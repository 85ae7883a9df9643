//! CRC-32C (Castagnoli, the reflected polynomial 0x82F63B78), the checksum of TFRecord
//! framing, and its "masked" form. Table-driven, one byte at a time: an epoch's event is a few
//! hundred bytes, so this costs well under a microsecond per epoch.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// The CRC of every byte value, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The masked CRC that TFRecord stores: rotated right by 15 bits plus a constant, so that a
/// CRC of data holding CRCs stays a good check (TensorFlow's `crc32c::Mask`).
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of the CRC catalogue and the test vectors of RFC 3720 (iSCSI), B.4.
    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    /// TensorFlow's masking: `((crc >> 15) | (crc << 17)) + 0xa282ead8` (a whole record as
    /// TensorBoard's own writer frames it is checked in `record.rs`).
    #[test]
    fn masking_matches_tensorflow() {
        let crc = crc32c(b"123456789");
        assert_eq!(
            masked_crc32c(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
        assert_ne!(masked_crc32c(b"a"), crc32c(b"a"));
    }
}
