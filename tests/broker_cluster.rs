//! Black-box durability tests of a 3-node cluster of real `keel server` processes (issue: the
//! broker). Every acknowledged message must be read back, at the offset it was acknowledged
//! with, in the order the producer sent it within its partition: across a SIGKILL of a
//! partition leader and its restart, and across a restart of the whole cluster.

mod common;

use common::acked::{check, consume_all, create_topic, leader_of, produce};
use common::{runtime, TestCluster};
use keel_client::Producer;

#[test]
fn acknowledged_messages_survive_a_leader_kill_and_restart() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(create_topic(&client, 3));
    let victim = rt
        .block_on(leader_of(&client, 0))
        .expect("partition 0 has a leader");
    let producer = Producer::new(client.clone());
    let total = 20_000;
    let mut killed_at = None;
    let mut restarted_at = None;
    let (acked, failed) = rt.block_on(produce(&producer, 0, total, |acked| {
        if killed_at.is_none() && acked >= 5_000 {
            cluster.kill(victim);
            killed_at = Some(acked);
        } else if killed_at.is_some() && restarted_at.is_none() && acked >= 12_000 {
            cluster.spawn(victim);
            restarted_at = Some(acked);
        }
        async {}
    }));
    assert!(
        killed_at.is_some() && restarted_at.is_some(),
        "the fault schedule ran"
    );
    cluster.wait_ready(victim);
    rt.block_on(producer.flush());
    let read = rt.block_on(consume_all(&client, 3, &acked));
    let duplicates = check(&acked, &read);
    let stored: usize = read.values().map(Vec::len).sum();
    eprintln!(
        "leader kill: sent {total}, acked {}, failed {failed}, stored {stored}, duplicates {duplicates}, victim node {victim}",
        acked.len()
    );
    assert!(
        acked.len() as u64 >= total * 9 / 10,
        "most sends succeed across one leader kill:\n{}",
        cluster.logs()
    );
}

#[test]
fn a_full_cluster_restart_keeps_every_acknowledged_message() {
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let _entered = rt.enter();
    let client = rt.block_on(cluster.client());
    rt.block_on(create_topic(&client, 2));
    let producer = Producer::new(client.clone());
    let (acked, failed) = rt.block_on(produce(&producer, 0, 3_000, |_| async {}));
    assert_eq!(failed, 0, "no faults, so every send is acknowledged");
    drop(producer);
    rt.block_on(client.close());
    // Every node dies at once; only what was fsynced (all acked messages) may be relied on.
    cluster.restart_all();
    let client = rt.block_on(cluster.client());
    let read = rt.block_on(consume_all(&client, 2, &acked));
    let duplicates = check(&acked, &read);
    assert_eq!(duplicates, 0);
    assert_eq!(read.values().map(Vec::len).sum::<usize>(), acked.len());
}
