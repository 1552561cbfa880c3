//! A PostgreSQL cluster of a test's own, for tests that stop, restart or crash the
//! database (the shared server on 5432 is never touched).
//!
//! It uses Debian's postgresql-common tools (`pg_createcluster`, `pg_ctlcluster`,
//! `pg_dropcluster`, as `.ci/run` installs them) and needs to run as root, as the tests do
//! here. The cluster listens on localhost on a free port, trusts every local connection
//! (`--auth=trust`) and is dropped, data and all, when the [`PgCluster`] is dropped — also
//! when the test panics. A cluster left behind by a test process that was killed is
//! dropped by the next [`PgCluster::create`].
//!
//! ```ignore
//! let cluster = PgCluster::create();
//! let app = TestApp::start_on(cluster.database().await, &DELIVERY_ARGS, true).await;
//! cluster.stop();   // the database is down
//! cluster.start();  // and back, same data
//! ```

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Connection;
use uuid::Uuid;

use super::{Cleanup, TestDb};

/// The prefix of every cluster this helper creates: `outhook-<pid>-<random>`.
const PREFIX: &str = "outhook-";

/// A running PostgreSQL cluster that exists for one test.
pub struct PgCluster {
    version: String,
    name: String,
    port: u16,
}

impl PgCluster {
    /// Creates a cluster on a free port and starts it. Panics (failing the test) when the
    /// tools are missing or the cluster does not come up within 30 s.
    pub fn create() -> Self {
        let version = newest_installed_version();
        drop_abandoned_clusters();
        // A port that was free a moment ago may be taken by the time the server binds it:
        // go again with another one (at most a few times).
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let name = format!(
                "{PREFIX}{}-{}",
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..8]
            );
            let created = run(&[
                "pg_createcluster",
                &version,
                &name,
                "--port",
                &port.to_string(),
                // Small, so that several clusters fit beside the shared one.
                "-o",
                "shared_buffers=16MB",
                "-o",
                "max_connections=100",
                "--",
                "--auth=trust",
                // A throwaway cluster need not wait for its new files to reach the disk.
                "--no-sync",
            ]);
            if let Err(e) = created {
                panic!(
                    "pg_createcluster failed (are postgresql-common and PostgreSQL installed, and is this root?): {e}"
                );
            }
            let cluster = Self {
                version: version.clone(),
                name,
                port,
            };
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(e) => last_error = e, // dropped (and removed) here
            }
        }
        panic!("a test cluster would not start: {last_error}");
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this cluster, as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new database on this cluster for an app to start on. The database goes with the
    /// cluster, so the handle removes nothing itself.
    pub async fn database(&self) -> TestDb {
        let name = format!("outhook_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connecting to the test cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("creating a database on the test cluster");
        TestDb {
            url: self.url(&name),
            cleanup: Cleanup::None,
        }
    }

    /// Starts the (stopped) cluster and waits until it accepts connections (at most 30 s).
    pub fn start(&self) {
        self.try_start()
            .unwrap_or_else(|e| panic!("the test cluster would not start: {e}"));
    }

    /// Stops the cluster the way an operator does (`-m fast`: sessions are ended, the
    /// server shuts down cleanly); returns once it is down.
    pub fn stop(&self) {
        self.ctl(&["stop", "-m", "fast"])
            .unwrap_or_else(|e| panic!("the test cluster would not stop: {e}"));
    }

    /// Stops the cluster as a crash would (`-m immediate`: no checkpoint, recovery at the
    /// next start).
    pub fn crash(&self) {
        self.ctl(&["stop", "-m", "immediate"])
            .unwrap_or_else(|e| panic!("the test cluster would not stop: {e}"));
    }

    /// Whether the server accepts connections now.
    pub fn is_accepting(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    fn try_start(&self) -> Result<(), String> {
        self.ctl(&["start"])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "cluster {} did not accept connections within 30 s",
            self.name
        ))
    }

    fn ctl(&self, action: &[&str]) -> Result<(), String> {
        // Without the flag, pg_ctlcluster hands the cluster to systemd where it runs.
        let mut argv = vec![
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
        ];
        argv.extend_from_slice(action);
        run(&argv)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(e) = run(&["pg_dropcluster", "--stop", &self.version, &self.name]) {
            eprintln!("dropping test cluster {} failed: {e}", self.name);
        }
    }
}

/// The newest PostgreSQL major version installed (`/usr/lib/postgresql/<version>`).
fn newest_installed_version() -> String {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql (Debian packages)");
    versions
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|v| Some((v.parse::<u32>().ok()?, v)))
        .max()
        .map(|(_, v)| v)
        .expect("a PostgreSQL version under /usr/lib/postgresql")
}

/// Drops the clusters of this helper whose test process no longer exists (it was killed
/// before it could drop them).
fn drop_abandoned_clusters() {
    let Ok(out) = Command::new("pg_lsclusters").arg("--no-header").output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.split_whitespace();
        let (Some(version), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["pg_dropcluster", "--stop", version, name]);
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Runs a command (bounded by the tools' own timeouts); the error carries its output.
fn run(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} exited with {}: {}{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
