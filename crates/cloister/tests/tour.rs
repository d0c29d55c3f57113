//! The README's tour, run as written: its `sh` blocks are read from README.md itself and their
//! commands run against the binary, with the placeholders filled from what earlier steps printed,
//! so the tour and the product cannot drift apart unnoticed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long the runtime may take to report ready, and any one command to finish: a bound for a
/// hang, not a timing assertion.
const WAIT: Duration = Duration::from_secs(120);

/// The tour's placeholders, and the captured value each one stands for. A placeholder the README
/// uses that is not here fails the test: a new one needs a way to be filled.
const PLACEHOLDERS: &[(&str, &str)] = &[
    ("acc_...", "account"), // the id `cloister account create shop` printed
    ("cls_...", "secret"),  // the token secret it printed
    ("KEY_ID", "key"),      // the key the crypto step created
    ("MODEL_ID", "model"),  // the model the step before made: uploaded, or trained
    ("JOB_ID", "job"),      // the training job
];

/// What to capture from a command's output: the command (by a part of its text), the slot, and how.
const CAPTURES: &[(&str, &str, Take)] = &[
    (
        "cloister account create shop",
        "account",
        Take::Word("acc_"),
    ),
    ("cloister account create shop", "secret", Take::Word("cls_")),
    (r#"{"algorithm":"p256"}"#, "key", Take::Json("/id")),
    ("/v1/ai/models?name=", "model", Take::Json("/id")),
    ("/v1/ai/train", "job", Take::Json("/id")),
    ("/v1/ai/jobs/", "model", Take::Json("/model/id")),
];

#[derive(Clone, Copy)]
enum Take {
    /// The first word of the output with this prefix.
    Word(&'static str),
    /// The string at this JSON pointer of the output.
    Json(&'static str),
}

/// Commands the test does not run, each with why.
const SKIPS: &[(&str, &str)] = &[
    // The binary's directory comes first on PATH instead; a non-interactive shell would not
    // expand the alias anyway.
    ("alias cloister=", "PATH names the binary"),
    // Runs until interrupted; the test follows the journal the same way to wait for readiness.
    ("cloister events --follow", "runs forever"),
    // The hardware quote block: it needs a quote from an SGX machine and a PCCS to fetch its
    // collateral. `tests/quote.rs` runs both commands on a recorded real quote and a fake PCCS.
    (
        "cloister quote collateral quote.bin",
        "needs a hardware quote and a PCCS (tests/quote.rs)",
    ),
    (
        "cloister quote verify quote.bin",
        "needs a hardware quote (tests/quote.rs)",
    ),
    (
        "cloister attest --collateral",
        "needs a hardware runtime (tests/quote.rs)",
    ),
];

/// Commands the README says fail, with their exit status. None in the tour today.
const EXPECTED_STATUS: &[(&str, i32)] = &[];

/// Files the tour takes as the reader's own: where the test gets them.
fn provide_files(dir: &Path, root: &Path) {
    std::fs::write(dir.join("report.pdf"), b"%PDF-1.4 a quarterly report\n").expect("report.pdf");
    std::fs::copy(
        root.join("crates/ai/tests/fixtures/mlp.onnx"),
        dir.join("model.onnx"),
    )
    .expect("model.onnx: the ai tests' MLP fixture (x: f32 [N, 4] -> y: [N, 3])");
}

#[test]
fn the_readme_tour_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().expect("workspace root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks = tour_blocks(&readme);
    assert!(
        blocks.len() >= 8,
        "the tour's sh blocks: found {}",
        blocks.len()
    );

    // The reader's working directory: the repository's paths the tour names, and its own files;
    // `cloister-data` is made here by the server the tour starts.
    let dir = tempfile::tempdir().expect("tempdir");
    for linked in ["examples", "crates"] {
        std::os::unix::fs::symlink(root.join(linked), dir.path().join(linked)).expect("symlink");
    }
    provide_files(dir.path(), &root);

    let commands: Vec<Vec<String>> = blocks.iter().map(|b| split_commands(b)).collect();
    // Every placeholder must be known before anything runs.
    let mut unknown = Vec::new();
    for command in commands.iter().flatten() {
        for word in placeholders_in(command) {
            if !PLACEHOLDERS.iter().any(|(p, _)| *p == word) {
                unknown.push(format!("{word} in: {command}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "README tour placeholders the test cannot fill (add them to PLACEHOLDERS):\n{}",
        unknown.join("\n")
    );

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_cloister"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut tour = Tour {
        dir: dir.path().to_owned(),
        path,
        server: None,
        addr: String::new(),
        vars: BTreeMap::new(),
        slots: BTreeMap::new(),
        ran: 0,
        skipped: Vec::new(),
    };
    for block in &commands {
        for command in block {
            tour.step(command);
        }
    }
    assert!(tour.server.is_some(), "the tour starts the server");
    assert!(tour.ran >= 20, "commands run: {}", tour.ran);
    // The value read back is the one stored.
    assert_eq!(
        std::fs::read(dir.path().join("back.pdf")).expect("back.pdf"),
        std::fs::read(dir.path().join("report.pdf")).expect("report.pdf"),
        "the value read back from storage"
    );
    eprintln!(
        "tour: {} commands run, skipped: {:?}",
        tour.ran, tour.skipped
    );
}

struct Tour {
    dir: PathBuf,
    path: String,
    server: Option<Server>,
    /// host:port the server listens on.
    addr: String,
    /// Shell variables the tour assigned (`TOKEN=...`), passed to later commands.
    vars: BTreeMap<String, String>,
    /// Captured values, by slot.
    slots: BTreeMap<&'static str, String>,
    ran: usize,
    skipped: Vec<String>,
}

impl Tour {
    fn step(&mut self, command: &str) {
        if let Some((_, why)) = SKIPS.iter().find(|(p, _)| command.contains(p)) {
            self.skipped.push(format!("{command} ({why})"));
            return;
        }
        let command = command.replace("cargo run --release -p cloister -- ", "cloister ");
        if command.starts_with("cloister run") {
            assert!(self.server.is_none(), "the tour starts one server");
            let server = Server::start(&self.dir, &self.path, &command);
            self.addr = server.addr.clone();
            self.server = Some(server);
            self.ran += 1;
            return;
        }
        assert!(
            self.server.is_some(),
            "a client command before the server: {command}"
        );
        let mut text = command.replace("localhost:8420", &self.addr);
        for (placeholder, slot) in PLACEHOLDERS {
            if text.contains(placeholder) {
                let value = self
                    .slots
                    .get(slot)
                    .unwrap_or_else(|| panic!("{placeholder} before a step printed it: {command}"));
                text = text.replace(placeholder, value);
            }
        }
        let assigned = assignment(&text);
        let script = match assigned {
            Some(name) => format!("set -euo pipefail\n{text}\nprintf %s \"${name}\""),
            None => format!("set -euo pipefail\n{text}"),
        };
        let output = Command::new("timeout")
            .arg(WAIT.as_secs().to_string())
            .args(["bash", "-c", &script])
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("CLOISTER_URL", format!("http://{}", self.addr))
            .env("NO_COLOR", "1")
            .env_remove("CLOISTER_ADMIN_TOKEN")
            .env_remove("CLOISTER_DATA_DIR")
            .env_remove("CLOISTER_LISTEN")
            .envs(&self.vars)
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        self.ran += 1;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = EXPECTED_STATUS
            .iter()
            .find(|(p, _)| command.contains(p))
            .map_or(0, |(_, s)| *s);
        assert_eq!(
            output.status.code(),
            Some(expected),
            "README tour command: {command}\nran as: {text}\nstdout: {stdout}\nstderr: {stderr}"
        );
        if let Some(name) = assigned {
            assert!(!stdout.is_empty(), "{name} is empty after: {command}");
            self.vars.insert(name.to_owned(), stdout);
            return;
        }
        let json: Option<Value> = serde_json::from_str(&stdout).ok();
        if let Some(answer) = &json {
            assert!(
                !answer["error"].is_object(),
                "README tour command answered an error: {command}\n{stdout}"
            );
        }
        for (part, slot, take) in CAPTURES {
            if !command.contains(part) {
                continue;
            }
            let value = match take {
                Take::Word(prefix) => stdout
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .find(|w| w.starts_with(prefix) && w.len() > prefix.len())
                    .map(str::to_owned),
                Take::Json(pointer) => json
                    .as_ref()
                    .and_then(|j| j.pointer(pointer))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            let value =
                value.unwrap_or_else(|| panic!("no {slot} in the output of {command}:\n{stdout}"));
            self.slots.insert(slot, value);
        }
        check(&command, &stdout);
    }
}

/// Key parts of what the tour says a command prints.
fn check(command: &str, stdout: &str) {
    if command.contains("cloister attest") {
        assert!(
            stdout.contains("SIMULATION"),
            "attest says SIMULATION:\n{stdout}"
        );
    }
    if command.contains("cloister oracle verify") {
        assert!(
            stdout.contains("signature:") && stdout.contains("valid"),
            "the report verifies:\n{stdout}"
        );
    }
    if command.contains("verify_report.py") {
        let v: Value = serde_json::from_str(stdout).expect("verify_report.py prints JSON");
        assert_eq!(v["verified"], true, "{stdout}");
    }
    if command.contains("/sign") {
        let v: Value = serde_json::from_str(stdout).expect("sign answers JSON");
        assert!(v["signature"].is_string(), "a signature: {stdout}");
    }
    if command.contains("/predict") {
        let v: Value = serde_json::from_str(stdout).expect("predict answers JSON");
        assert!(
            v["outputs"].is_object() || v["predictions"].is_array(),
            "a prediction: {stdout}"
        );
    }
}

/// The `sh` blocks from "## A tour" to the next `## ` section.
fn tour_blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## A tour\n")
        .expect("README has \"## A tour\"");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    let tour = &rest[..end];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in tour.lines() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed sh block in the tour");
    blocks
}

/// A block's commands, comments dropped: a command runs on while a quote is open, a line ends in
/// `\`, or a here-document has not reached its end.
fn split_commands(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    let (mut single, mut double) = (false, false);
    let mut heredoc: Option<String> = None;
    for line in block.lines() {
        if let Some(end) = &heredoc {
            current.push_str(line);
            current.push('\n');
            if line == end {
                heredoc = None;
                push(&mut commands, &mut current);
            }
            continue;
        }
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !single && !double && c == '#' && (i == 0 || chars[i - 1].is_whitespace()) {
                break;
            }
            if !single && !double && c == '<' && chars.get(i + 1) == Some(&'<') {
                let word: String = chars[i + 2..]
                    .iter()
                    .skip_while(|c| **c == '-' || **c == '\'' || **c == '"')
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                heredoc = Some(word);
            }
            match c {
                '\\' if !single => {
                    kept.push(c);
                    if let Some(n) = chars.get(i + 1) {
                        kept.push(*n);
                    }
                    i += 2;
                    continue;
                }
                '\'' if !double => single = !single,
                '"' if !single => double = !double,
                _ => {}
            }
            kept.push(c);
            i += 1;
        }
        let kept = if single || double {
            kept
        } else {
            kept.trim_end().to_owned()
        };
        current.push_str(&kept);
        current.push('\n');
        if single || double || kept.ends_with('\\') || heredoc.is_some() {
            continue;
        }
        push(&mut commands, &mut current);
    }
    assert!(
        current.trim().is_empty() && heredoc.is_none(),
        "a command left open at the end of a block: {current}"
    );
    commands
}

fn push(commands: &mut Vec<String>, current: &mut String) {
    let command = current.trim().to_owned();
    if !command.is_empty() {
        commands.push(command);
    }
    current.clear();
}

/// Words that stand for a value: `xyz_...` or `NAME_ID`.
fn placeholders_in(command: &str) -> Vec<String> {
    command
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| {
            let upper_id =
                w.ends_with("_ID") && w.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            let elided = w.contains("_...");
            upper_id || elided
        })
        .map(str::to_owned)
        .collect()
}

/// The variable a command assigns, if it is one assignment `NAME=...`.
fn assignment(command: &str) -> Option<&str> {
    let (name, _) = command.split_once('=')?;
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(name)
}

/// The tour's `cloister run`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` (`cloister run ...`) in `dir` on a free port, and waits until the runtime
    /// reports ready in its journal, read with `cloister events --follow`.
    fn start(dir: &Path, path: &str, command: &str) -> Server {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args(&args)
            .current_dir(dir)
            .env("PATH", path)
            .env("CLOISTER_LISTEN", "127.0.0.1:0")
            .env("CLOISTER_LOG", "warn")
            .env_remove("CLOISTER_ADMIN_TOKEN")
            .env_remove("CLOISTER_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloister run");
        let mut banner = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut banner)
            .expect("banner");
        let addr = banner
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the banner: {banner:?}"))
            .to_owned();
        let server = Server { child, addr };
        server.wait_ready(dir);
        server
    }

    fn wait_ready(&self, dir: &Path) {
        let mut events = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args(["events", "--follow", "--json"])
            .current_dir(dir)
            .env("CLOISTER_URL", format!("http://{}", self.addr))
            .env_remove("CLOISTER_ADMIN_TOKEN")
            .env_remove("CLOISTER_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloister events");
        let stdout = events.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(e) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready" {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        let ready = rx.recv_timeout(WAIT);
        let _ = events.kill();
        let _ = events.wait();
        ready.expect("the runtime reports ready in its journal");
    }
}
