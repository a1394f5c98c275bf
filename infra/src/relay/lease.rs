//! One relay at a time (docs/decisions/0019-one-relay-at-a-time.md): a relay publishes only
//! while it holds a PostgreSQL advisory lock named after it, taken on a connection of its own and
//! held for as long as that connection lives. A second relay waits for the lock; when the active
//! one dies, its session ends, the server releases the lock and the waiting one takes over
//! within [`POLL`]. A relay that loses its connection (and so, maybe, the lock) stops publishing
//! within [`CHECK`] and waits for the lock again.

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};

/// How often a waiting relay tries the lock.
pub const POLL: Duration = Duration::from_millis(500);

/// How often an active relay checks that its lock's connection is alive.
pub const CHECK: Duration = Duration::from_secs(1);

/// The held lock: the connection whose session holds it.
pub struct Lease {
    connection: PgConnection,
}

impl Lease {
    /// Takes the lock named after `relay` if nobody holds it; `None` when another session does.
    pub async fn try_acquire(pool: &PgPool, relay: &str) -> Result<Option<Self>, sqlx::Error> {
        // A connection of its own, out of the pool: the lock lives as long as its session.
        let mut connection = pool.acquire().await?.detach();
        let taken: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                .bind(lock_name(relay))
                .fetch_one(&mut connection)
                .await?;
        if taken {
            Ok(Some(Self { connection }))
        } else {
            // Closing the connection ends the session; nothing of it is kept.
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Resolves when the lock's connection fails (or stops answering within [`CHECK`]): from
    /// then on the lock may be someone else's.
    pub async fn lost(&mut self) {
        loop {
            tokio::time::sleep(CHECK).await;
            let alive = tokio::time::timeout(CHECK, self.connection.ping()).await;
            if !matches!(alive, Ok(Ok(()))) {
                return;
            }
        }
    }

    /// Gives the lock up (a stopping relay lets a waiting one take over at once).
    pub async fn release(self) {
        let _ = self.connection.close().await;
    }
}

/// The advisory lock's name: one per relay (the relay is named after its topic).
fn lock_name(relay: &str) -> String {
    format!("member.relay/{relay}")
}
