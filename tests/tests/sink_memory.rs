//! The contract suite against the reference in-memory store: checks the suite itself.

use member_projections::memory::MemoryStore;

async fn open() -> (MemoryStore, ()) {
    (MemoryStore::new("memory"), ())
}

async fn close(_: MemoryStore, (): ()) {}

mod contract {
    member_tests::sink_contract_tests!(super::open, super::close);
}
