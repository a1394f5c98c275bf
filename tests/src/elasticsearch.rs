//! The local stack's Elasticsearch clusters for tests: started through scripts/stack.sh when they
//! do not answer, a fresh pair of indices per test, removed at the end.

use std::time::Duration;

use elasticsearch::indices::{IndicesDeleteIndexTemplateParts, IndicesDeleteParts};
use member_infra::search::elasticsearch::IndexOptions;
use member_infra::search::{ElasticsearchIndex, SearchCluster};

/// Makes sure the cluster answers (at least yellow), starting it through the stack script if
/// it does not: the tests run against real Elasticsearch, never skip.
pub fn ensure_cluster(cluster: SearchCluster) {
    if !crate::process::stack_ok(&["check", cluster.target()]) {
        crate::process::stack(&["start-service", cluster.target()]);
    }
}

/// The URL of `cluster` in the local configuration.
pub fn url(cluster: SearchCluster) -> String {
    cluster.elasticsearch_url(&crate::settings()).to_owned()
}

/// Index options unique to one test.
pub fn fresh_options(shards: u32) -> IndexOptions {
    IndexOptions {
        index: crate::unique("member_t"),
        shards,
        replicas: 0,
        refresh: Duration::from_millis(100),
    }
}

/// A fresh pair of indices on `cluster` (started if needed).
pub async fn fresh_index(cluster: SearchCluster, shards: u32) -> ElasticsearchIndex {
    ensure_cluster(cluster);
    ElasticsearchIndex::connect(&url(cluster), cluster, fresh_options(shards))
        .await
        .expect("the local cluster accepts the templates and indices")
}

/// Removes every index behind both aliases and both templates.
pub async fn remove(index: &ElasticsearchIndex) {
    let client = index.client();
    let patterns = [
        format!("{}-*", index.index()),
        format!("{}-*", index.identity_index()),
    ];
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let deleted = client
        .indices()
        .delete(IndicesDeleteParts::Index(&patterns))
        .send()
        .await
        .expect("delete the test indices");
    assert!(
        deleted.status_code().is_success(),
        "{}",
        deleted.status_code()
    );
    for name in [index.index(), index.identity_index()] {
        let deleted = client
            .indices()
            .delete_index_template(IndicesDeleteIndexTemplateParts::Name(name))
            .send()
            .await
            .expect("delete the test template");
        assert!(
            deleted.status_code().is_success(),
            "{}",
            deleted.status_code()
        );
    }
}

/// An Elasticsearch node of the test's own (the local stack's install, its own JVM, data
/// directory and free ports), for tests that kill a cluster: the shared clusters are not theirs
/// to kill. Killed on drop.
pub struct PrivateElasticsearch {
    port: u16,
    transport: u16,
    home: tempfile::TempDir,
    child: Option<std::process::Child>,
}

fn scripts_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// `$ES_HOME` of scripts/elasticsearch.sh, installed if missing.
fn es_home() -> String {
    let dir = scripts_dir();
    let status = std::process::Command::new("bash")
        .arg(dir.join("install-elasticsearch.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run install-elasticsearch.sh");
    assert!(status.success(), "install-elasticsearch.sh failed");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1/lib.sh"; source "$1/elasticsearch.sh"; ensure_java >/dev/null; printf '%s\n%s' "$ES_HOME" "$JAVA_BIN""#)
        .arg("es-home")
        .arg(&dir)
        .output()
        .expect("read ES_HOME");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

impl PrivateElasticsearch {
    /// Starts the node and waits until it is at least yellow.
    pub async fn start() -> Self {
        let mut node = Self {
            port: crate::free_port(),
            transport: crate::free_port(),
            home: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        node.spawn().await;
        node
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let found = es_home();
        let (es, java) = found.split_once('\n').expect("ES_HOME and JAVA_BIN");
        let home = self.home.path();
        std::fs::create_dir_all(home.join("config")).unwrap();
        std::fs::create_dir_all(home.join("tmp")).unwrap();
        let yml = format!(
            "cluster.name: private\nnode.name: private\nnetwork.host: 127.0.0.1\nhttp.port: {}\n\
             transport.port: {}\ndiscovery.type: single-node\npath.data: {}/data\npath.logs: {}/logs\n\
             cluster.routing.allocation.disk.threshold_enabled: false\n",
            self.port,
            self.transport,
            home.display(),
            home.display()
        );
        std::fs::write(home.join("config/elasticsearch.yml"), yml).unwrap();
        std::fs::write(
            home.join("config/log4j2.properties"),
            "status = error\nappender.console.type = Console\nappender.console.name = console\n\
             appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = %m%n\n\
             rootLogger.level = warn\nrootLogger.appenderRef.console.ref = console\n",
        )
        .unwrap();
        let log = std::fs::File::create(home.join("node.log")).unwrap();
        let child = std::process::Command::new(java)
            .args([
                "-Xms256m",
                "-Xmx256m",
                "-XX:+UseG1GC",
                "-Dio.netty.noUnsafe=true",
            ])
            .arg(format!("-Djava.io.tmpdir={}/tmp", home.display()))
            .args([
                "-Dlog4j2.disable.jmx=true",
                "-Des.set.netty.runtime.available.processors=false",
            ])
            .arg("-cp")
            .arg(format!("{es}/classes:{es}/libs/*"))
            .arg("org.elasticsearch.node.LocalStackNode")
            .arg(home)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private Elasticsearch node");
        self.child = Some(child);
        let health = format!("{}/_cluster/health", self.url());
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let status = match client.get(&health).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            let status = status.and_then(|b| b["status"].as_str().map(str::to_owned));
            if matches!(status.as_deref(), Some("green" | "yellow")) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private Elasticsearch node did not start (see {}/node.log)",
                home.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL, as a crashed node: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for PrivateElasticsearch {
    fn drop(&mut self) {
        self.kill();
    }
}
