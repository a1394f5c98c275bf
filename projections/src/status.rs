//! A port for what the query API's `/admin/status` shows beside backend health: how far behind
//! each projection is. The owner implements it with the Kafka consumer groups' lag.

use async_trait::async_trait;
use serde::Serialize;

use crate::sink::BoxError;

/// How far one projection is behind the event stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionLag {
    /// The projection target (`mysql`, `redis-a`, `search-primary`, ...).
    pub target: String,
    /// Records behind the head of the topic, when known.
    pub records_behind: Option<u64>,
    /// Age of the oldest record not yet applied, when known.
    pub seconds_behind: Option<f64>,
}

#[async_trait]
pub trait StatusProvider: Send + Sync + 'static {
    async fn projection_lag(&self) -> Result<Vec<ProjectionLag>, BoxError>;
}
