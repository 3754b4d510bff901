//! The state-store contract (`reelfarm_coordinator::state::contract`) against a real etcd:
//! the same checks the memory backend passes in the coordinator's unit tests, so the etcd
//! backend cannot rot unnoticed.

use reelfarm::local_etcd::LocalEtcd;
use reelfarm_coordinator::state::contract::run_contract;
use reelfarm_coordinator::state::etcd::{connect, EtcdStore};

#[tokio::test]
async fn etcd_store_keeps_the_state_store_contract() {
    let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
    let client = connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("connecting to the test etcd");
    let store = EtcdStore::new(client, "contract");
    run_contract(&store).await;
}

#[tokio::test]
async fn etcd_store_contract_holds_per_cluster_prefix() {
    // Two clusters on one etcd are independent: the second starts from an empty store and
    // its own term, whatever the first wrote.
    let etcd = LocalEtcd::start().expect("starting etcd (run scripts/test.sh to install it)");
    let client = connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .expect("connecting to the test etcd");
    run_contract(&EtcdStore::new(client.clone(), "first")).await;
    run_contract(&EtcdStore::new(client, "second")).await;
}
