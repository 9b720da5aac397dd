//! Percentiles of latencies.

/// The nearest-rank percentile `p` (0-100) of `sorted` (ascending); 0 for
/// no samples.
///
/// ```
/// use es_core::testing::bank::percentile;
/// let sorted: Vec<u64> = (1..=100).collect();
/// assert_eq!((percentile(&sorted, 50.0), percentile(&sorted, 99.0), percentile(&[], 50.0)), (50, 99, 0));
/// ```
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The distribution of `sorted` as `(percentile, value)` pairs, every 5th
/// percentile and dense in the tail (96, 97, 98, 99, 99.5, 99.9, 100):
/// the points of a CDF plot.
pub fn latency_cdf(sorted: &[u64]) -> Vec<(f64, u64)> {
    let mut points: Vec<f64> = (1..=19).map(|i| f64::from(i) * 5.0).collect();
    points.extend([96.0, 97.0, 98.0, 99.0, 99.5, 99.9, 100.0]);
    points.into_iter().map(|p| (p, percentile(sorted, p))).collect()
}
