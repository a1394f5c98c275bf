//! The contract suite against the reference in-memory store: checks the suite itself.

use member_projections::memory::MemoryStore;

#[tokio::test]
async fn the_reference_store_meets_the_sink_contract() {
    let store = MemoryStore::new("memory");
    member_tests::sink_contract::run_all(&store, &store).await;
}
