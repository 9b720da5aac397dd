//! Stream id to shard: FNV-1a (64 bit) of the id's UTF-8 bytes, then jump
//! consistent hash (Lamping and Veach, 2014) into `0..shard_count`.
//!
//! Both algorithms are fixed by their published definitions, use no seed
//! and no platform-dependent state, so every process, on every machine and
//! every version of this crate, puts a stream on the same shard (the tests
//! pin known values). Jump hashing also moves as few streams as possible
//! when the number of shards changes (`1/n` of them from `n - 1` to `n`),
//! although a running cluster refuses such a change (see es-redis's shard
//! manager for how to migrate).

use super::ShardId;
use crate::StreamId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The 64-bit FNV-1a hash of a stream id.
///
/// ```
/// assert_eq!(es_core::stream_hash(""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(es_core::stream_hash("a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn stream_hash(id: &str) -> u64 {
    id.as_bytes()
        .iter()
        .fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Jump consistent hash: the bucket of `key` among `buckets` (0 when
/// `buckets` is 0 or 1).
///
/// ```
/// assert_eq!(es_core::jump_consistent_hash(12345, 1), 0);
/// assert!(es_core::jump_consistent_hash(12345, 16) < 16);
/// ```
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The shard of a stream among `shard_count` shards.
///
/// ```
/// use es_core::{shard_of, StreamId};
/// let id = StreamId::from("account-42");
/// assert_eq!(shard_of(&id, 16), shard_of(&id, 16));
/// assert!(shard_of(&id, 16) < 16);
/// ```
pub fn shard_of(stream_id: impl Into<StreamId>, shard_count: u32) -> ShardId {
    jump_consistent_hash(stream_hash(stream_id.into().as_str()), shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values pinned when the scheme was chosen: a change here moves every
    /// stream of every running cluster to another shard.
    #[test]
    fn shards_are_stable_across_versions() {
        let pinned = [
            ("account-1", 16, 13),
            ("0190a3b2-7c1e-7d2a-9f00-000000000001", 16, 2),
            ("transfer-9", 16, 3),
            ("", 16, 13),
            ("account-1", 3, 2),
            ("account-1", 1024, 132),
        ];
        for (id, count, shard) in pinned {
            assert_eq!(shard_of(StreamId::from(id), count), shard, "{id} over {count}");
        }
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        assert_eq!(stream_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_is_in_range_and_spreads_evenly() {
        let n = 16;
        let mut counts = vec![0u32; n as usize];
        for i in 0..16_000 {
            let s = shard_of(StreamId::from(format!("account-{i}")), n);
            counts[s as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven: {c}");
        }
        assert_eq!(jump_consistent_hash(7, 0), 0);
    }

    #[test]
    fn growing_the_shard_count_moves_few_streams() {
        let moved = (0..10_000)
            .filter(|i| {
                let id = StreamId::from(format!("s-{i}"));
                shard_of(&id, 16) != shard_of(&id, 17)
            })
            .count();
        // Ideal: 1/17 of the streams (588).
        assert!((450..750).contains(&moved), "moved {moved}");
    }
}
