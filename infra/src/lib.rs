//! Adapters to the real world: the PostgreSQL event store and its relay, Kafka, the MySQL
//! shards, the Redis centers, the search engines, and configuration loading.
#![forbid(unsafe_code)]

pub mod config;
pub mod event_store;
pub mod kafka;
pub mod mysql;
pub mod redis;
pub mod relay;
pub mod search;
mod stored;
pub mod stores;
