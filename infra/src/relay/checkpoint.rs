use sqlx::PgPool;

/// A point in the event store's commit order: the last event a relay published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Checkpoint {
    pub txid: u64,
    pub position: i64,
}

impl Checkpoint {
    /// The stored checkpoint of relay `name`, or the beginning of the store.
    pub async fn load(pool: &PgPool, name: &str) -> Result<Self, sqlx::Error> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT txid::text, position FROM relay_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?;
        Ok(match row {
            Some((txid, position)) => Self {
                txid: txid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                position,
            },
            None => Self::default(),
        })
    }

    /// Stores the checkpoint. Never moves it backwards (two relays racing, or a stale one, cannot
    /// make the next one re-publish from an earlier point than already acknowledged).
    pub async fn store(&self, pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO relay_checkpoints AS c (name, txid, position) VALUES ($1, $2::text::xid8, $3)
             ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position, updated_at = now()
             WHERE (c.txid, c.position) < (EXCLUDED.txid, EXCLUDED.position)",
        )
        .bind(name)
        .bind(self.txid.to_string())
        .bind(self.position)
        .execute(pool)
        .await?;
        Ok(())
    }
}
