//! Stable key hashing for `ring_hash`.
//!
//! The ring must come out the same in every rpcgate process and every client of a fleet,
//! so a key lands on the same backend wherever it is balanced. `std`'s `DefaultHasher` is
//! randomly seeded per process, so we use FNV-1a 64 (fixed, tiny, fast on short keys)
//! followed by the MurmurHash3 `fmix64` finaliser: FNV alone leaves the high bits of
//! short keys that differ only in their last byte (`addr#1`, `addr#2`) poorly mixed, and
//! the ring is ordered by the whole 64-bit value.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a 64 state, so ring points (`address#i`) hash without building a
/// string for each of them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    /// A fresh state.
    pub(crate) const fn new() -> Self {
        Self(FNV_OFFSET)
    }

    /// Feeds bytes.
    pub(crate) fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// Feeds the decimal digits of `n` (as `format!("{n}")` would), without allocating.
    pub(crate) fn write_decimal(self, mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.write(&buf[at..])
    }

    /// The finished, avalanche-mixed hash.
    pub(crate) fn finish(self) -> u64 {
        fmix64(self.0)
    }
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Stable 64-bit hash of a key: FNV-1a 64 with a final avalanche mix.
///
/// Use it for `PickContext::hash` (e.g. over an `x-user-id` header value or the client
/// IP) so that every process of a fleet maps a key to the same endpoint: the value does
/// not depend on the process, the platform or the Rust version.
pub fn hash_key(key: &[u8]) -> u64 {
    Fnv::new().write(key).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors_before_mixing() {
        // Reference values of plain FNV-1a 64.
        assert_eq!(Fnv::new().write(b"").0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv::new().write(b"a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv::new().write(b"foobar").0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn decimal_feed_equals_formatted_string() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let a = Fnv::new().write(b"h:1#").write_decimal(n).finish();
            let b = hash_key(format!("h:1#{n}").as_bytes());
            assert_eq!(a, b, "n = {n}");
        }
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        assert_eq!(hash_key(b"user-42"), hash_key(b"user-42"));
        assert_ne!(hash_key(b"user-42"), hash_key(b"user-43"));
        // The top bit should be set for roughly half of sequential keys.
        let high = (0..1000u32)
            .filter(|i| hash_key(format!("k{i}").as_bytes()) >> 63 == 1)
            .count();
        assert!((400..600).contains(&high), "{high}");
    }
}
