//! Key placement shared by every layer: the Redis Cluster slot of a key and
//! the 64-bit position that orders keys inside both storage tiers.
//!
//! A key's *position* is `slot << 48 | hash48(key)`. Ordering both tiers by
//! position makes three things cheap with one index: point lookups, SCAN
//! cursors that are plain integers, and streaming every key of one slot.

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: u16 = 16384;

const HASH_BITS: u32 = 48;
const HASH_MASK: u64 = (1 << HASH_BITS) - 1;

/// CRC16/XMODEM lookup table (polynomial 0x1021), the checksum Redis Cluster
/// uses for slot assignment.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC16/XMODEM of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
}

/// The part of the key that is hashed: the content of the first non-empty
/// `{...}` hash tag if there is one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster slot of `key`.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The ordering position of `key` in both tiers.
pub fn position_of(key: &[u8]) -> u64 {
    let h = xxhash_rust::xxh3::xxh3_64(key) & HASH_MASK;
    (u64::from(slot_of(key)) << HASH_BITS) | h
}

/// The slot a position belongs to.
pub fn slot_of_position(pos: u64) -> u16 {
    (pos >> HASH_BITS) as u16
}

/// The first position of `slot`.
pub fn slot_start(slot: u16) -> u64 {
    u64::from(slot) << HASH_BITS
}

/// One past the last position of `slot` (saturating for the last slot).
pub fn slot_end(slot: u16) -> u64 {
    if slot + 1 >= SLOTS {
        u64::MAX
    } else {
        u64::from(slot + 1) << HASH_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
    }

    #[test]
    fn positions_order_by_slot() {
        for key in [&b"a"[..], b"user:1", b"{x}y"] {
            let pos = position_of(key);
            assert_eq!(slot_of_position(pos), slot_of(key));
            assert!(pos >= slot_start(slot_of(key)) && pos < slot_end(slot_of(key)));
        }
    }
}
