//! Adapters to the real world: the PostgreSQL event store and its relay, Kafka, the MySQL
//! shards, the Redis centers, the search engines, and configuration loading.
#![forbid(unsafe_code)]

pub mod config;
pub mod event_store;
pub mod search;
