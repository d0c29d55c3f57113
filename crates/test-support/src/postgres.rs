//! A private PostgreSQL server for one test: `initdb` into a temporary directory, trust
//! authentication on a free loopback port (and a unix socket in the directory), one database, and
//! the server stopped and the directory removed when dropped, also when the test panics.
//!
//! The server's tools are found on `PATH` or under `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql` package; `scripts/test` installs it when `initdb` is missing). `initdb` refuses to
//! run as root, so as root every server command runs as the `postgres` user (`runuser`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The database [`Postgres::start`] creates.
pub const DATABASE: &str = "cloister";

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    /// Holds the cluster (`data/`), the socket and the log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    /// Whether server commands run as the `postgres` user.
    as_postgres: bool,
}

/// The directory holding `initdb`, `pg_ctl`, `pg_dump` and `psql`.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        // The newest first.
        versions.sort();
        versions.reverse();
        candidates.extend(versions);
    }
    candidates.extend(on_path);
    for dir in candidates {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            // A symlink on PATH: use the directory it points into, where pg_dump matches.
            let real = std::fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or(dir);
            return real;
        }
    }
    panic!(
        "PostgreSQL's initdb and pg_ctl are neither on PATH nor under /usr/lib/postgresql/*/bin: \
         install Debian's `postgresql` package (scripts/test does)"
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn checked(what: &str, output: std::io::Result<Output>) -> Output {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Postgres {
    /// Initializes and starts a server, and creates [`DATABASE`].
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("cloister-pg-")
            .tempdir()
            .expect("tempdir");
        if as_postgres {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let pg = Postgres {
            bin,
            dir,
            port: crate::free_port(),
            as_postgres,
        };
        checked(
            "initdb",
            pg.server_command("initdb")
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
                .args(["--no-locale", "--no-sync", "-D"])
                .arg(pg.data())
                .output(),
        );
        pg.start_server();
        checked(
            "createdb",
            pg.client("psql")
                .args(["-d", "postgres", "-c"])
                .arg(format!("CREATE DATABASE {DATABASE}"))
                .output(),
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command for a server tool, as the `postgres` user when running as root.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.stdin(Stdio::null());
        command
    }

    /// A client tool connected to this server as `postgres`.
    fn client(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        command
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        command
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        checked(
            "pg_ctl start",
            self.server_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("log"))
                .args(["-o", &options])
                .output(),
        );
    }

    /// Stops the server (fast: connections are closed) and waits until it is down.
    pub fn stop_server(&self) {
        checked(
            "pg_ctl stop",
            self.server_command("pg_ctl")
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(self.data())
                .output(),
        );
    }

    /// Writes `DIR/cloister.toml` for the real binary: a free loopback port, data in `DIR/data`,
    /// and the records in this server through a URL file (as a Kubernetes secret is mounted: with
    /// a trailing newline).
    pub fn write_config(&self, dir: &Path) -> PathBuf {
        let url_file = dir.join("database-url");
        std::fs::write(&url_file, format!("{}\n", self.url())).expect("write the URL");
        let text = format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"{}\"\n",
            dir.join("data").display(),
            url_file.display()
        );
        let path = dir.join("cloister.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// The URL Cloister connects with.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs SQL in [`DATABASE`] and answers what `psql` printed (unaligned, tuples only).
    pub fn sql(&self, sql: &str) -> String {
        let output = checked(
            "psql",
            self.client("psql")
                .args([
                    "-d",
                    DATABASE,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-A",
                    "-t",
                    "-c",
                    sql,
                ])
                .output(),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A full plain-text dump of [`DATABASE`].
    pub fn dump(&self) -> Vec<u8> {
        checked(
            "pg_dump",
            self.client("pg_dump").args(["-d", DATABASE]).output(),
        )
        .stdout
    }

    /// Replaces [`DATABASE`] with the state of `dump` (from [`Postgres::dump`]). Nothing may be
    /// connected to it.
    pub fn restore(&self, dump: &[u8]) {
        self.sql_in(
            "postgres",
            &format!("DROP DATABASE {DATABASE} WITH (FORCE)"),
        );
        self.sql_in("postgres", &format!("CREATE DATABASE {DATABASE}"));
        let path = self.dir.path().join("restore.sql");
        std::fs::write(&path, dump).expect("write the dump");
        checked(
            "psql (restore)",
            self.client("psql")
                .args(["-d", DATABASE, "-v", "ON_ERROR_STOP=1", "-q", "-f"])
                .arg(&path)
                .output(),
        );
    }

    fn sql_in(&self, database: &str, sql: &str) {
        checked(
            "psql",
            self.client("psql")
                .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql])
                .output(),
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the directory goes next, and a test that panicked wants no wait.
        let stopped = self
            .server_command("pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            // Not running (stopped by the test), or pg_ctl failed: kill what the pid file names.
            if let Ok(pid) = std::fs::read_to_string(self.data().join("postmaster.pid"))
                && let Some(pid) = pid
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<i32>().ok())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = checked(
            "id postgres",
            Command::new("id").args([flag, "postgres"]).output(),
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    (id("-u"), id("-g"))
}
