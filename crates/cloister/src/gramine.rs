//! `cloister gramine manifest`: a Gramine manifest template (the `.manifest.template` that
//! `gramine-manifest` renders) for this binary and a configuration: the enclave sized from the
//! `[enclave]` budget the runtime checks at start, remote attestation by DCAP, the identity
//! (`isvprodid`, `isvsvn`) the sealing rules expect, and exactly the files the binary opens.
//!
//! Paths: an absolute path in the configuration is the same path inside the enclave; a relative one
//! is relative to the directory `gramine-sgx` is started in on the host, and to `/` inside (Gramine's
//! start directory), so each is mounted from its host path at `/` + the path.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use runtime::budget;
use runtime::config::Config;

/// Gramine's own threads beside the application's (IPC, async events and the TLS handshake
/// helper): each takes a thread slot.
pub(crate) const GRAMINE_HELPER_THREADS: u64 = 4;

/// What Gramine itself takes of the enclave's memory (LibOS, PAL, its heap), in MiB.
pub(crate) const GRAMINE_RESERVE_MIB: u64 = 128;

/// The stack each thread maps inside the enclave (Rust's default for spawned threads), in MiB.
pub(crate) const THREAD_STACK_MIB: u64 = 2;

/// The libraries a Rust binary links beyond glibc (which Gramine brings in its runtime directory).
pub(crate) const HOST_LIBRARIES: &[&str] = &["libgcc_s.so.1"];

/// The name resolution files glibc reads for the oracle's lookups (`/etc/resolv.conf` and
/// `/etc/hosts` are made by Gramine itself with `sys.enable_extra_runtime_domain_names_conf`).
pub(crate) const DNS_FILES: &[&str] = &["/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf"];

/// The CA certificates the oracle's HTTPS client trusts: one bundle, named to it through
/// `SSL_CERT_FILE` (with `SSL_CERT_DIR` empty, so that no directory of certificates is read).
pub(crate) const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Environment variables a manifest may pass in from the host: they change how the log looks,
/// nothing else.
pub(crate) const PASSABLE: &[&str] = &["CLOISTER_LOG", "CLOISTER_LOG_FORMAT", "NO_COLOR"];

/// A variable the manifest refuses to pass in, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `CLOISTER_ADMIN_TOKEN`: the host would choose the admin token.
    AdminToken,
    /// A variable that would choose what the measured configuration fixes.
    Measured { name: String, instead: &'static str },
    /// Not a variable Cloister documents.
    Unknown(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::AdminToken => f.write_str(
                "CLOISTER_ADMIN_TOKEN is not passed into an enclave: an environment variable is \
                 chosen by the host, so the host would choose the admin token. Give the token as a \
                 file instead: `runtime.admin_token_file` in the configuration, or let Cloister \
                 generate DATA_DIR/admin.token at first start",
            ),
            Refused::Measured { name, instead } => write!(
                f,
                "{name} is not passed into an enclave: the host would choose what the measured \
                 configuration fixes; set {instead} in the configuration instead"
            ),
            Refused::Unknown(name) => write!(
                f,
                "{name} is not a variable Cloister reads; the variables a manifest may pass in are {}",
                PASSABLE.join(", ")
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// Checks that `name` may be passed in from the host.
pub(crate) fn passable(name: &str) -> Result<&'static str, Refused> {
    if let Some(ok) = PASSABLE.iter().find(|p| **p == name) {
        return Ok(ok);
    }
    Err(match name {
        "CLOISTER_ADMIN_TOKEN" => Refused::AdminToken,
        "CLOISTER_CONFIG" => Refused::Measured {
            name: name.into(),
            instead: "nothing: the manifest names the file it was made from",
        },
        "CLOISTER_DATA_DIR" => Refused::Measured {
            name: name.into(),
            instead: "runtime.data_dir",
        },
        "CLOISTER_LISTEN" => Refused::Measured {
            name: name.into(),
            instead: "runtime.listen",
        },
        other => Refused::Unknown(other.into()),
    })
}

/// What a manifest is made from.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub config: &'a Config,
    /// The configuration file, as the host names it (measured: a trusted file); without one, the
    /// built-in defaults, which are part of the binary.
    pub config_file: Option<&'a Path>,
    /// The binary, as the host names it.
    pub binary: &'a Path,
    pub debug: bool,
    /// Variables passed in from the host, each already [`passable`].
    pub env: Vec<&'static str>,
}

/// The enclave's size and thread slots for `config`, from the same budget the runtime checks
/// its services against at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    /// A power of two, as SGX requires.
    pub enclave_mib: u64,
    pub max_threads: u64,
}

pub(crate) fn size(config: &Config) -> Size {
    let b = config.enclave.budget();
    let max_threads = budget::process_threads(b) + GRAMINE_HELPER_THREADS;
    let need = b.memory_mib + GRAMINE_RESERVE_MIB + max_threads * THREAD_STACK_MIB;
    Size {
        enclave_mib: need.next_power_of_two(),
        max_threads,
    }
}

/// The path inside the enclave for a path the configuration gives.
pub(crate) fn inside(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        Path::new("/").join(path)
    }
}

/// Whether the oracle, the one service that reaches the network, runs with `config`.
pub(crate) fn oracle_enabled(config: &Config) -> bool {
    let (specs, _) = config.resolve(&stack::catalog());
    specs.iter().any(|s| s.name == oracle::NAME)
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn uri(path: &Path) -> String {
    quoted(&format!("file:{}", path.display()))
}

fn dir_uri(path: &Path) -> String {
    let text = path.display().to_string();
    quoted(&format!("file:{}/", text.trim_end_matches('/')))
}

fn size_text(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// The manifest template for `input`.
pub(crate) fn manifest(input: &Input<'_>) -> String {
    let config = input.config;
    let size = size(config);
    let oracle = oracle_enabled(config);
    let data = &config.runtime.data_dir;
    let binary_inside = inside(input.binary);
    let mut m = String::new();
    let mut line = |s: &str| {
        m.push_str(s);
        m.push('\n');
    };
    line(&format!(
        "# Gramine manifest template for Cloister {}, made by `cloister gramine manifest` from {}.",
        env!("CARGO_PKG_VERSION"),
        input
            .config_file
            .map_or("the built-in defaults".into(), |f| f.display().to_string())
    ));
    line("# Render, sign and run it (docs/deploy-sgx.md):");
    line(
        "#   gramine-manifest -Darch_libdir=/lib/x86_64-linux-gnu cloister.manifest.template cloister.manifest",
    );
    line("#   gramine-sgx-sign --manifest cloister.manifest --output cloister.manifest.sgx");
    line("#   gramine-sgx cloister");
    line(
        "# Every path relative to the configuration is relative to the directory gramine-sgx starts in.",
    );
    line("");
    line(&format!(
        "libos.entrypoint = {}",
        quoted(&binary_inside.display().to_string())
    ));
    line("loader.entrypoint.uri = \"file:{{ gramine.libos }}\"");
    line("loader.log_level = \"error\"");
    line("loader.env.LD_LIBRARY_PATH = \"/lib:{{ arch_libdir }}\"");
    line(
        "# The arguments are part of the measurement: the host cannot choose another configuration,",
    );
    line("# and the platform is Gramine whatever the file's [enclave] platform says.");
    let config_arg = input.config_file.map_or(String::new(), |f| {
        format!(
            ", \"--config\", {}",
            quoted(&inside(f).display().to_string())
        )
    });
    line(&format!(
        "loader.argv = [\"cloister\", \"run\", \"--platform\", \"gramine\"{config_arg}]"
    ));
    if oracle {
        line(
            "# The oracle's HTTPS client reads this one bundle of CA certificates (a trusted file).",
        );
        line(&format!("loader.env.SSL_CERT_FILE = {}", quoted(CA_BUNDLE)));
        line("loader.env.SSL_CERT_DIR = \"\"");
    }
    line("# Only variables that change how the log looks are taken from the host.");
    for name in &input.env {
        line(&format!("loader.env.{name} = {{ passthrough = true }}"));
    }
    line("");
    line("fs.start_dir = \"/\"");
    line("fs.mounts = [");
    line("  { path = \"/lib\", uri = \"file:{{ gramine.runtimedir() }}\" },");
    line("  { path = \"{{ arch_libdir }}\", uri = \"file:{{ arch_libdir }}\" },");
    let mount = |m: &mut String, host: &Path| {
        let _ = writeln!(
            m,
            "  {{ path = {}, uri = {} }},",
            quoted(&inside(host).display().to_string()),
            uri(host)
        );
    };
    mount(&mut m, input.binary);
    if let Some(file) = input.config_file {
        mount(&mut m, file);
    }
    m.push_str(
        "  # The data directory: everything Cloister keeps there is sealed or encrypted by Cloister\n  \
         # itself (keystore, storage, counters) or holds no secret (the hash-chained journal), except\n  \
         # admin.token when Cloister generated it there: the host can read that file.\n",
    );
    mount(&mut m, data);
    if let Some(token) = &config.runtime.admin_token_file {
        mount(&mut m, token);
    }
    m.push_str("]\n");
    let mut line = |s: &str| {
        m.push_str(s);
        m.push('\n');
    };
    line("");
    line("# SIGTERM from the host stops Cloister gracefully, as outside an enclave.");
    line("sys.enable_sigterm_injection = true");
    if oracle {
        line("# The oracle resolves the hosts it fetches from: Gramine makes /etc/resolv.conf and");
        line("# /etc/hosts from the host's (the oracle checks every address it connects to).");
        line("sys.enable_extra_runtime_domain_names_conf = true");
    }
    line("");
    if input.debug {
        line("# DEBUG ENCLAVE: the host can read its memory; the quote says so (debug flag set).");
        line("sgx.debug = true");
    } else {
        line("sgx.debug = false");
    }
    line("sgx.edmm_enable = false");
    line(&format!(
        "# [enclave] memory_mib = {} and threads = {}: the budget the runtime checks its services",
        config.enclave.memory_mib, config.enclave.threads
    ));
    line(&format!(
        "# against, plus the blocking pool ({}), the main and watcher threads ({}), Gramine's helper",
        budget::BLOCKING_THREADS,
        budget::PROCESS_THREADS
    ));
    line(&format!(
        "# threads ({GRAMINE_HELPER_THREADS}), Gramine's own {GRAMINE_RESERVE_MIB} MiB and {THREAD_STACK_MIB} MiB of stack per thread, rounded up to a power of two."
    ));
    line(&format!(
        "sgx.enclave_size = {}",
        quoted(&size_text(size.enclave_mib))
    ));
    line(&format!("sgx.max_threads = {}", size.max_threads));
    line("sgx.remote_attestation = \"dcap\"");
    line(
        "# The identity in every quote, and what the sealing keys are bound to ([enclave] product_id",
    );
    line("# and security_version): a blob sealed by this enclave names this security version.");
    line(&format!("sgx.isvprodid = {}", config.enclave.product_id));
    line(&format!("sgx.isvsvn = {}", config.enclave.security_version));
    line("");
    line("sgx.trusted_files = [");
    line("  \"file:{{ gramine.libos }}\",");
    line("  \"file:{{ gramine.runtimedir() }}/\",");
    for lib in HOST_LIBRARIES {
        line(&format!("  \"file:{{{{ arch_libdir }}}}/{lib}\","));
    }
    line(&format!("  {},", uri(input.binary)));
    if let Some(file) = input.config_file {
        line(
            "  # The configuration is measured: changing it means a new manifest and a new signature.",
        );
        line(&format!("  {},", uri(file)));
    }
    if oracle {
        line("  # The oracle's CA certificates: pinned when the manifest is signed.");
        line(&format!("  {},", uri(Path::new(CA_BUNDLE))));
    }
    line("]");
    line("");
    line("sgx.allowed_files = [");
    line(&format!("  {},", dir_uri(data)));
    if let Some(token) = &config.runtime.admin_token_file {
        line("  # The admin token file (a mounted secret): read once at start.");
        line(&format!("  {},", uri(token)));
    }
    if oracle {
        for file in DNS_FILES {
            line(&format!("  {},", uri(Path::new(file))));
        }
    }
    line("]");
    m
}

/// `cloister gramine manifest`: prints the template for `config_file` (or the defaults).
pub(crate) fn run(config_file: Option<&Path>, debug: bool, env: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut passed = Vec::new();
    for name in env {
        let name = passable(name)?;
        if !passed.contains(&name) {
            passed.push(name);
        }
    }
    let config = match config_file {
        Some(file) => match crate::serve::load(file)? {
            Ok(config) => config,
            Err(invalid) => {
                crate::serve::print_problems(file, &invalid);
                anyhow::bail!("{} is not a valid configuration", file.display());
            }
        },
        None => Config::default(),
    };
    let binary = std::env::current_exe().context("the path of this binary")?;
    let text = manifest(&Input {
        config: &config,
        config_file,
        binary: &binary,
        debug,
        env: passed,
    });
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the manifest")?;
    Ok(())
}
