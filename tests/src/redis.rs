//! Redis helpers for tests: raw connections to look inside a center, and a private
//! `redis-server` that a test may stop and restart without disturbing the shared centers.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use member_infra::redis::{Expiry, RedisCenter};

/// A plain connection, for assertions on keys and TTLs.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers (is the stack up? make stack-up)")
}

/// A center of the shared local stack with the configured expiry.
pub fn center(target: &str) -> RedisCenter {
    RedisCenter::for_target(target, &crate::settings().redis).expect("redis settings")
}

/// A center of the shared local stack with another expiry (for TTL and fence tests).
pub fn center_with_expiry(target: &str, expiry: Expiry) -> RedisCenter {
    let settings = crate::settings().redis;
    let url = if target == "redis-b" {
        settings.b.url
    } else {
        settings.a.url
    };
    RedisCenter::new(target, url.expose_secret(), expiry).expect("redis url")
}

/// A `redis-server` of the test's own on a free loopback port, without persistence; killed on
/// drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make stack-up installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (its data is gone, as after a crash of a center without persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
