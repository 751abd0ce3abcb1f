//! The nemesis: a seeded schedule of faults against the cluster, one at a time, each healed
//! before the next (so every fault's effect is bounded and the run always ends healthy):
//!
//! ```text
//!   quiet 2-6 s ─► fault (kill | pause | partition | wipe) ─► hold ─► heal ─► quiet ─► ...
//! ```
//!
//! - kill: SIGKILL a random node, the leader of a random partition (or of the metadata group),
//!   or a majority; restart them after 1-5 s.
//! - pause: SIGSTOP a random node or a partition leader for 1-6 s (election timeout: 200-400
//!   ms), then SIGCONT.
//! - partition (3-10 s, through the relays): a majority/minority split, a leader cut off
//!   alone, a bridge (one node sees both sides, the sides not each other), one way (the
//!   minority's datagrams to the majority are dropped; over QUIC this often becomes a full cut),
//!   or 20-150 ms of latency on every link.
//! - wipe: stop a node, delete its data dir, restart it and ask for `replace-node`
//!   (docs/OPERATIONS.md "Replacing a node"). Off by default until membership changes exist.
//!
//! The seed fixes every choice the nemesis makes; which node leads a partition at a given
//! moment depends on the cluster, so a replay repeats the schedule, not the exact run.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_client::{Admin, Client, ReplaceNodeWait};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Cluster;
use crate::history::{Event, History};
use crate::limits::{
    CRASH_LOG_LINES, FAULT_QUIET_MS, KILL_HOLD_MS, LATENCY_FAULT_DELAY_MS, PARTITION_HOLD_MS,
    PAUSE_HOLD_MS, RESTART_READY_TIMEOUT, WIPE_REPLACE_TIMEOUT,
};
use crate::workload::LeaderView;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Wipe,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Wipe => "wipe",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "kill" => Ok(FaultKind::Kill),
            "pause" => Ok(FaultKind::Pause),
            "partition" => Ok(FaultKind::Partition),
            "wipe" => Ok(FaultKind::Wipe),
            other => Err(format!(
                "unknown fault {other:?} (kill, pause, partition, wipe)"
            )),
        }
    }
}

pub struct Nemesis {
    rng: ChaCha8Rng,
    kinds: Vec<FaultKind>,
    admin: Admin,
    leader_view: LeaderView,
    partitions: Arc<Vec<(String, u32)>>,
    history: Arc<History>,
}

impl Nemesis {
    pub fn new(
        seed: u64,
        kinds: Vec<FaultKind>,
        client: Client,
        leader_view: LeaderView,
        partitions: Arc<Vec<(String, u32)>>,
        history: Arc<History>,
    ) -> Nemesis {
        assert!(
            !kinds.is_empty(),
            "the nemesis needs at least one fault kind"
        );
        Nemesis {
            rng: ChaCha8Rng::seed_from_u64(seed),
            kinds,
            admin: Admin::new(client),
            leader_view,
            partitions,
            history,
        }
    }

    /// Injects faults until `until`; returns with every fault healed.
    pub async fn run(&mut self, cluster: &mut Cluster, until: Instant) {
        while Instant::now() < until {
            let quiet = Duration::from_millis(self.rng.random_range(FAULT_QUIET_MS));
            sleep_until_or(quiet, until).await;
            self.reap_crashed(cluster);
            if Instant::now() >= until {
                break;
            }
            let kind = *self
                .kinds
                .choose(&mut self.rng)
                .expect("kinds is not empty");
            match kind {
                FaultKind::Kill => self.kill(cluster).await,
                FaultKind::Pause => self.pause(cluster).await,
                FaultKind::Partition => self.partition(cluster).await,
                FaultKind::Wipe => self.wipe(cluster).await,
            }
        }
    }

    /// A node that died without being killed has crashed: note it, restart it.
    pub fn reap_crashed(&mut self, cluster: &mut Cluster) {
        for (id, status) in cluster.reap_crashed() {
            self.history.record(Event::Note {
                text: format!(
                    "node {id} CRASHED ({status}); last log lines:\n{}",
                    cluster.log_tail(id, CRASH_LOG_LINES)
                ),
            });
            eprintln!("keel-chaos: node {id} crashed ({status})");
            if let Err(error) = cluster.spawn(id) {
                self.history
                    .note(format!("restarting crashed node {id}: {error:#}"));
            }
        }
    }

    fn start(&self, kind: FaultKind, detail: &str, nodes: &[u64]) {
        eprintln!("keel-chaos: fault {} {detail} on {nodes:?}", kind.name());
        self.history.record(Event::FaultStart {
            kind: kind.name().into(),
            detail: detail.into(),
            nodes: nodes.to_vec(),
        });
    }

    fn end(&self, kind: FaultKind, detail: &str) {
        self.history.record(Event::FaultEnd {
            kind: kind.name().into(),
            detail: detail.into(),
        });
    }

    /// The leader of a random partition, or (one time in four) of the metadata group, as the
    /// cluster reports it; a random node when no leader is known.
    async fn leader_or_random(&mut self, cluster: &Cluster) -> u64 {
        let (topic, partition) = self
            .partitions
            .choose(&mut self.rng)
            .expect("the run has partitions")
            .clone();
        let fallback = *cluster.ids().choose(&mut self.rng).expect("nodes");
        let leader = if self.rng.random_range(0..4) == 0 {
            self.leader_view.metadata_leader().await
        } else {
            self.leader_view
                .leaders(&topic)
                .await
                .get(&partition)
                .copied()
        };
        leader
            .filter(|id| cluster.ids().contains(id))
            .unwrap_or(fallback)
    }

    fn random_nodes(&mut self, cluster: &Cluster, count: usize) -> Vec<u64> {
        let mut ids = cluster.ids();
        ids.shuffle(&mut self.rng);
        ids.truncate(count);
        ids.sort_unstable();
        ids
    }

    async fn kill(&mut self, cluster: &mut Cluster) {
        let majority = cluster.ids().len() / 2 + 1;
        let (detail, victims) = match self.rng.random_range(0..3) {
            0 => ("random node", self.random_nodes(cluster, 1)),
            1 => ("leader", vec![self.leader_or_random(cluster).await]),
            _ => ("majority", self.random_nodes(cluster, majority)),
        };
        self.start(FaultKind::Kill, detail, &victims);
        for &id in &victims {
            cluster.kill(id);
        }
        let hold = Duration::from_millis(self.rng.random_range(KILL_HOLD_MS));
        tokio::time::sleep(hold).await;
        self.restart(cluster, &victims).await;
        self.end(FaultKind::Kill, detail);
    }

    async fn restart(&mut self, cluster: &mut Cluster, ids: &[u64]) {
        for &id in ids {
            if !cluster.is_running(id) {
                if let Err(error) = cluster.spawn(id) {
                    self.history
                        .note(format!("restarting node {id}: {error:#}"));
                }
            }
        }
        for &id in ids {
            if !cluster.wait_ready(id, RESTART_READY_TIMEOUT).await {
                self.history.note(format!(
                    "node {id} not ready {RESTART_READY_TIMEOUT:?} after its restart"
                ));
            }
        }
    }

    async fn pause(&mut self, cluster: &mut Cluster) {
        let (detail, victim) = if self.rng.random_bool(0.5) {
            ("random node", self.random_nodes(cluster, 1)[0])
        } else {
            ("leader", self.leader_or_random(cluster).await)
        };
        self.start(FaultKind::Pause, detail, &[victim]);
        if let Err(error) = cluster.pause(victim) {
            self.history
                .note(format!("pausing node {victim}: {error:#}"));
        }
        let hold = Duration::from_millis(self.rng.random_range(PAUSE_HOLD_MS));
        tokio::time::sleep(hold).await;
        if let Err(error) = cluster.resume(victim) {
            self.history
                .note(format!("resuming node {victim}: {error:#}"));
        }
        self.end(FaultKind::Pause, detail);
    }

    async fn partition(&mut self, cluster: &mut Cluster) {
        let ids = cluster.ids();
        let minority_size = (ids.len() - 1) / 2;
        let (detail, nodes): (&str, Vec<u64>) = match self.rng.random_range(0..5) {
            0 => {
                let minority = self.random_nodes(cluster, minority_size);
                let majority: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| !minority.contains(id))
                    .collect();
                cluster.network.cut(&minority, &majority);
                ("majority/minority", minority)
            }
            1 => {
                let leader = self.leader_or_random(cluster).await;
                let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != leader).collect();
                cluster.network.cut(&[leader], &rest);
                ("isolated leader", vec![leader])
            }
            2 => {
                // The bridge sees everyone; the two sides see only the bridge and their own.
                let mut shuffled = ids.clone();
                shuffled.shuffle(&mut self.rng);
                let bridge = shuffled[0];
                let half = (shuffled.len() - 1) / 2;
                let (left, right) = shuffled[1..].split_at(half);
                cluster.network.cut(left, right);
                ("bridge", vec![bridge])
            }
            3 => {
                let minority = self.random_nodes(cluster, minority_size);
                for &from in &minority {
                    for &to in ids.iter().filter(|id| !minority.contains(id)) {
                        cluster.network.block(from, to);
                    }
                }
                ("one way", minority)
            }
            _ => {
                let delay = Duration::from_millis(self.rng.random_range(LATENCY_FAULT_DELAY_MS));
                for &from in &ids {
                    for &to in ids.iter().filter(|&&to| to != from) {
                        cluster.network.delay(from, to, delay);
                    }
                }
                ("latency", Vec::new())
            }
        };
        self.start(FaultKind::Partition, detail, &nodes);
        let hold = Duration::from_millis(self.rng.random_range(PARTITION_HOLD_MS));
        tokio::time::sleep(hold).await;
        cluster.network.heal();
        self.end(FaultKind::Partition, detail);
    }

    async fn wipe(&mut self, cluster: &mut Cluster) {
        let victim = self.random_nodes(cluster, 1)[0];
        self.start(FaultKind::Wipe, "disk loss", &[victim]);
        cluster.kill(victim);
        if let Err(error) = cluster.wipe(victim) {
            self.history
                .note(format!("wiping node {victim}: {error:#}"));
        }
        if let Err(error) = cluster.spawn(victim) {
            self.history
                .note(format!("restarting wiped node {victim}: {error:#}"));
        }
        // The new incarnation waits to be added; replace-node adds it as a learner, then swaps.
        let replaced = tokio::time::timeout(
            WIPE_REPLACE_TIMEOUT,
            self.admin
                .replace_node(victim, ReplaceNodeWait::UntilReplaced),
        )
        .await;
        match replaced {
            Ok(Ok(response)) => self
                .history
                .note(format!("replace-node {victim}: {response:?}")),
            Ok(Err(error)) => self
                .history
                .note(format!("replace-node {victim} failed: {error}")),
            Err(_) => self.history.note(format!(
                "replace-node {victim} did not finish within {} s",
                WIPE_REPLACE_TIMEOUT.as_secs()
            )),
        }
        if !cluster.wait_ready(victim, RESTART_READY_TIMEOUT).await {
            self.history
                .note(format!("wiped node {victim} not ready after replace-node"));
        }
        self.end(FaultKind::Wipe, "disk loss");
    }
}

/// Sleeps `duration`, or until `until` if that comes first.
async fn sleep_until_or(duration: Duration, until: Instant) {
    let remaining = until.saturating_duration_since(Instant::now());
    tokio::time::sleep(duration.min(remaining)).await;
}
