//! The decisions of the shard protocol, as pure functions of a
//! [`ClusterView`]: which shards an instance takes, which ones move.

use es_core::ShardId;

use super::{ClusterView, ShardConfig, ShardStatus};

/// A shard handed from one instance to another by a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The shard.
    pub shard: ShardId,
    /// Its owner now.
    pub from: String,
    /// The instance that should take it.
    pub to: String,
}

/// The most shards one instance should own in `view`: the fair share
/// rounded up, at least `min_shards_per_instance`, at most
/// `max_shards_per_instance`.
pub fn fair_share(view: &ClusterView, config: &ShardConfig) -> u32 {
    let live = u32::try_from(view.live_instances().count()).unwrap_or(u32::MAX).max(1);
    config
        .shard_count
        .div_ceil(live)
        .max(config.min_shards_per_instance)
        .min(config.max_shards_per_instance)
}

/// The shards `me` should try to take now: unowned ones (never owned,
/// released, or whose owner's lease ran out) up to its fair share, the
/// ones a rebalance handed to it first. A shard handed to another live
/// instance is reserved for it for one lease TTL after its release (so the
/// giver does not take it back), then open to any instance under its share
/// (the target may have filled its share meanwhile).
pub fn shards_to_acquire(view: &ClusterView, config: &ShardConfig, me: &str) -> Vec<ShardId> {
    let (want, candidates) = acquisition_candidates(view, config, me);
    candidates.into_iter().take(want).collect()
}

/// How many shards `me` should take now, and every shard it may take, in
/// the order to try them ([`shards_to_acquire`] is the first `want` of
/// them). Every instance sees the same free shards: one that loses a try
/// to another goes on down the list in the same round, rather than
/// waiting a round for the shards nobody took.
pub fn acquisition_candidates(view: &ClusterView, config: &ShardConfig, me: &str) -> (usize, Vec<ShardId>) {
    let now = view.now_ms;
    let owned = view.shards.iter().filter(|s| s.live_owner(now) == Some(me)).count();
    let want = (fair_share(view, config) as usize).saturating_sub(owned);
    let grace = i64::try_from(config.lock_timeout.as_millis()).unwrap_or(i64::MAX);
    let reserved_for_other = |t: &str, released: i64| {
        t != me && now < released.saturating_add(grace) && view.live_instances().any(|i| i.id == t)
    };
    let mut free: Vec<(u8, ShardId)> = view
        .shards
        .iter()
        .filter_map(|s| {
            let rank = match (s.status_at(now), s.target.as_deref()) {
                (ShardStatus::Available, Some(t)) if t == me => 0,
                (ShardStatus::Available, Some(t)) if reserved_for_other(t, s.released_at_ms) => return None,
                (ShardStatus::Failed, _) => 1,
                (ShardStatus::Available, _) => 2,
                _ => return None,
            };
            Some((rank, s.shard))
        })
        .collect();
    free.sort_unstable();
    (want, free.into_iter().map(|(_, s)| s).collect())
}

/// The shards to move so that no live instance owns more than
/// `rebalance_threshold x fair share` shards (and at least 2) above the
/// least loaded one. Nothing moves while a shard is unowned or already
/// being handed over: acquisitions settle first.
pub fn rebalance_moves(view: &ClusterView, config: &ShardConfig) -> Vec<Move> {
    let now = view.now_ms;
    let settled = view.shards.iter().all(|s| s.status_at(now) == ShardStatus::Assigned);
    let mut counts = view.counts();
    if !settled || counts.len() < 2 {
        return Vec::new();
    }
    let ideal = f64::from(config.shard_count) / counts.len() as f64;
    let mut moved: Vec<ShardId> = Vec::new();
    let mut moves = Vec::new();
    while let (Some((max_id, max)), Some((min_id, min))) = (
        counts
            .iter()
            .max_by_key(|(id, n)| (**n, std::cmp::Reverse(*id)))
            .map(|(i, n)| (i.clone(), *n)),
        counts
            .iter()
            .min_by_key(|(id, n)| (**n, *id))
            .map(|(i, n)| (i.clone(), *n)),
    ) {
        let gap = max.saturating_sub(min);
        if gap < 2 || f64::from(gap) <= config.rebalance_threshold * ideal || min >= config.max_shards_per_instance {
            break;
        }
        let Some(shard) = view
            .shards
            .iter()
            .rev()
            .find(|s| s.owner.as_deref() == Some(max_id.as_str()) && !moved.contains(&s.shard))
            .map(|s| s.shard)
        else {
            break;
        };
        moved.push(shard);
        moves.push(Move {
            shard,
            from: max_id.clone(),
            to: min_id.clone(),
        });
        if let Some(n) = counts.get_mut(&max_id) {
            *n -= 1;
        }
        if let Some(n) = counts.get_mut(&min_id) {
            *n += 1;
        }
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::super::{InstanceRecord, ShardRecord};
    use super::*;

    const NOW: i64 = 1_000_000;

    fn view(instances: &[&str], owners: &[Option<&str>]) -> ClusterView {
        ClusterView {
            now_ms: NOW,
            instances: instances
                .iter()
                .map(|id| {
                    (
                        (*id).to_owned(),
                        InstanceRecord {
                            id: (*id).to_owned(),
                            address: format!("http://{id}"),
                            load: 0,
                            expires_at_ms: NOW + 5_000,
                        },
                    )
                })
                .collect(),
            shards: owners
                .iter()
                .enumerate()
                .map(|(n, owner)| ShardRecord {
                    shard: n as u32,
                    status: if owner.is_some() {
                        ShardStatus::Assigned
                    } else {
                        ShardStatus::Available
                    },
                    owner: owner.map(str::to_owned),
                    token: 1,
                    lease_expires_at_ms: if owner.is_some() { NOW + 5_000 } else { 0 },
                    target: None,
                    released_at_ms: 0,
                })
                .collect(),
        }
    }

    fn config() -> ShardConfig {
        ShardConfig::default()
    }

    #[test]
    fn a_lone_instance_takes_every_shard() {
        let v = view(&["a"], &[None; 16]);
        assert_eq!(shards_to_acquire(&v, &config(), "a"), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn instances_take_up_to_the_fair_share_rounded_up() {
        let mut owners = vec![Some("a"); 6];
        owners.extend([None; 10]);
        let v = view(&["a", "b", "c"], &owners);
        assert_eq!(fair_share(&v, &config()), 6);
        assert!(shards_to_acquire(&v, &config(), "a").is_empty());
        assert_eq!(shards_to_acquire(&v, &config(), "b"), (6..12).collect::<Vec<_>>());
    }

    #[test]
    fn an_expired_lease_makes_the_shard_failed_and_takeable() {
        let mut v = view(&["a", "b"], &[Some("a"), Some("b")]);
        v.instances.get_mut("a").unwrap().expires_at_ms = NOW - 1;
        v.shards[0].lease_expires_at_ms = NOW - 1;
        assert_eq!(v.shards[0].status_at(NOW), ShardStatus::Failed);
        assert_eq!(v.shards[0].status_at(NOW - 2), ShardStatus::Assigned);
        assert_eq!(v.owner_of(0), None);
        assert_eq!(shards_to_acquire(&v, &config(), "b"), vec![0]);
    }

    #[test]
    fn a_handed_over_shard_is_reserved_for_its_target_for_one_lease() {
        let mut v = view(&["a", "b", "c"], &[None, None, Some("a")]);
        v.shards[1].target = Some("c".into());
        v.shards[1].released_at_ms = NOW - 100;
        assert_eq!(shards_to_acquire(&v, &config(), "c"), vec![1, 0]);
        assert_eq!(
            shards_to_acquire(&v, &config(), "b"),
            vec![0],
            "the giver does not take it back"
        );
        // The target may have filled its share meanwhile: after one lease
        // another instance under its share takes it rather than leave it
        // unowned; at once if the target is gone.
        v.now_ms = NOW + 4_950;
        for i in v.instances.values_mut() {
            i.expires_at_ms = NOW + 10_000;
        }
        assert_eq!(shards_to_acquire(&v, &config(), "b"), vec![0, 1]);
        v.now_ms = NOW;
        v.instances.get_mut("c").unwrap().expires_at_ms = NOW - 1;
        assert_eq!(shards_to_acquire(&v, &config(), "b"), vec![0, 1]);
    }

    #[test]
    fn max_shards_per_instance_caps_acquisition() {
        let v = view(&["a"], &[None; 16]);
        let c = ShardConfig {
            max_shards_per_instance: 4,
            ..config()
        };
        assert_eq!(shards_to_acquire(&v, &c, "a").len(), 4);
    }

    #[test]
    fn a_restarted_instance_gets_shards_back_within_the_threshold() {
        let mut owners = vec![Some("a"); 8];
        owners.extend([Some("b"); 8]);
        let mut v = view(&["a", "b", "c"], &owners);
        let moves = rebalance_moves(&v, &config());
        assert!(moves.iter().all(|m| m.to == "c"));
        for m in &moves {
            v.shards[m.shard as usize].owner = Some(m.to.clone());
        }
        let counts = v.counts();
        let (max, min) = (counts.values().max().unwrap(), counts.values().min().unwrap());
        assert!(f64::from(max - min) <= 0.2 * 16.0 / 3.0 || max - min < 2, "{counts:?}");
        assert_eq!(counts.values().sum::<u32>(), 16);
        assert_eq!(moves.len(), 5, "{moves:?}");
    }

    #[test]
    fn a_balanced_cluster_does_not_move() {
        let mut owners = vec![Some("a"); 6];
        owners.extend([Some("b"); 5]);
        owners.extend([Some("c"); 5]);
        assert!(rebalance_moves(&view(&["a", "b", "c"], &owners), &config()).is_empty());
    }

    #[test]
    fn nothing_moves_while_shards_are_unowned_or_moving() {
        let mut owners = vec![Some("a"); 15];
        owners.push(None);
        assert!(rebalance_moves(&view(&["a", "b"], &owners), &config()).is_empty());
        let mut v = view(&["a", "b"], &[Some("a"); 16]);
        v.shards[3].status = ShardStatus::Rebalancing;
        assert!(rebalance_moves(&v, &config()).is_empty());
    }

    #[test]
    fn a_higher_threshold_tolerates_more_imbalance() {
        let mut owners = vec![Some("a"); 10];
        owners.extend([Some("b"); 6]);
        let v = view(&["a", "b"], &owners);
        assert_eq!(rebalance_moves(&v, &config()).len(), 2);
        let lax = ShardConfig {
            rebalance_threshold: 0.6,
            ..config()
        };
        assert!(rebalance_moves(&v, &lax).is_empty());
    }
}
