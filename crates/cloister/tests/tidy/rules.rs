//! The renovation's rules, each a pure check over source text so its own unit test can show it
//! failing on a scratch example: crates import only downward along ARCHITECTURE.md's layer list;
//! no module cycles inside a crate; no source file over 800 lines; no `Result<_, String>` in a
//! public signature; the runtime's public items are documented.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{our_dependencies, rust_files, workspace};

/// The longest a source file (outside tests and benches) may be.
const MAX_LINES: usize = 800;

// --- the layer list ---------------------------------------------------------------------------

/// The layer list from ARCHITECTURE.md's "## Layers" section: one numbered line per layer, the
/// crates of that layer in backticks. Layer 1 is the bottom.
fn layers(architecture: &str) -> Vec<Vec<String>> {
    let Some(start) = architecture.find("\n## Layers\n") else {
        return Vec::new();
    };
    let section = &architecture[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end]
        .lines()
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|l| l.split('`').skip(1).step_by(2).map(str::to_owned).collect())
        .collect()
}

/// Each dependency (crate -> dependency) that does not point to a lower layer.
fn upward_imports(layers: &[Vec<String>], edges: &[(String, String)]) -> Vec<String> {
    let layer_of = |name: &str| layers.iter().position(|l| l.iter().any(|c| c == name));
    let mut bad = Vec::new();
    for (from, to) in edges {
        match (layer_of(from), layer_of(to)) {
            (Some(a), Some(b)) if b < a => {}
            (Some(_), Some(_)) => bad.push(format!("{from} -> {to} (not a lower layer)")),
            (None, _) => bad.push(format!("{from} is in no layer")),
            (_, None) => bad.push(format!("{to} is in no layer")),
        }
    }
    bad
}

// --- module cycles ----------------------------------------------------------------------------

/// The module path of a source file under a crate's `src/` (`bus/mailbox.rs` -> `["bus",
/// "mailbox"]`; `lib.rs`, `main.rs` and `mod.rs` name their directory's module).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)]` module (a test module
/// may use anything of its parent).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every module path a file's code names through `crate::` or `super::`, resolved from the
/// file's own module path (items past the module are kept: the caller trims them).
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code = code_of(text);
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let (base, skip) = if rest.starts_with("crate::") && !preceded_by_ident(bytes, i) {
            (Vec::new(), "crate::".len())
        } else if rest.starts_with("super::") && !preceded_by_ident(bytes, i) {
            let mut base = module.to_vec();
            let mut skip = 0;
            while code[i + skip..].starts_with("super::") {
                base.pop();
                skip += "super::".len();
            }
            (base, skip)
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        for tail in paths_at(&code[i + skip..]) {
            let mut path = base.clone();
            path.extend(tail);
            found.push(path);
        }
        i += skip;
    }
    found
}

fn preceded_by_ident(bytes: &[u8], i: usize) -> bool {
    i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':')
}

/// The paths written at the start of `text`: `a::b::C` or a use group `{a::X, b::{Y, Z}}`.
fn paths_at(text: &str) -> Vec<Vec<String>> {
    let ident_len = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let mut path = Vec::new();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut item_start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        for sub in paths_at(group[item_start..j].trim_start()) {
                            out.push([path.clone(), sub].concat());
                        }
                        return out;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        for sub in paths_at(group[item_start..j].trim_start()) {
                            out.push([path.clone(), sub].concat());
                        }
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
            return out;
        }
        let n = ident_len(rest);
        if n == 0 {
            break;
        }
        path.push(rest[..n].to_owned());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    if path.is_empty() || path[0] == "self" {
        Vec::new()
    } else {
        vec![path]
    }
}

/// The dependency edges between sibling modules: a file in `a/...` naming something in `b/...`,
/// where `a` and `b` are children of the same module, is an edge `a -> b`. A child naming its
/// parent's own items, or a parent naming its child, is not an edge between siblings.
fn sibling_edges(files: &[(Vec<String>, String)]) -> BTreeSet<(String, String)> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeSet::new();
    for (module, text) in files {
        for mut target in references(module, text) {
            while !target.is_empty() && !modules.contains(&target) {
                target.pop();
            }
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if module.len() > common && target.len() > common {
                let from = module[..=common].join("::");
                let to = target[..=common].join("::");
                edges.insert((from, to));
            }
        }
    }
    edges
}

/// Every cycle among the edges, each once, as `a -> b -> a`.
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let mut found = BTreeSet::new();
    for start in next.keys() {
        // Depth-first from `start`, looking for a way back to it through larger names only, so
        // each cycle is found once, from its smallest member.
        let mut stack = vec![(*start, vec![*start])];
        while let Some((node, path)) = stack.pop() {
            for &n in next.get(node).map(Vec::as_slice).unwrap_or_default() {
                if n == *start {
                    let mut cycle = path.clone();
                    cycle.push(n);
                    found.insert(cycle.join(" -> "));
                } else if n > *start && !path.contains(&n) {
                    let mut p = path.clone();
                    p.push(n);
                    stack.push((n, p));
                }
            }
        }
    }
    found.into_iter().collect()
}

// --- signatures and lengths -------------------------------------------------------------------

/// Each public function (a `pub fn`, or a method of a `pub trait`) whose signature returns
/// `Result<_, String>`, by its first line.
fn string_results(text: &str) -> Vec<String> {
    let code = code_of(text);
    let mut bad = Vec::new();
    let lines: Vec<&str> = code.lines().collect();
    // The brace depth at which the `pub trait` being read opened, if any.
    let mut public_trait: Option<usize> = None;
    let mut depth = 0usize;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let opens_trait = t.starts_with("pub trait ");
        let in_trait = public_trait.is_some_and(|d| depth == d + 1);
        let method = in_trait && (t.starts_with("fn ") || t.starts_with("async fn "));
        if opens_trait {
            public_trait = Some(depth);
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if public_trait.is_some_and(|d| depth <= d) && !opens_trait {
            public_trait = None;
        }
        if !(t.starts_with("pub fn ") || t.starts_with("pub async fn ") || method) {
            continue;
        }
        let mut signature = String::new();
        for l in &lines[i..] {
            signature.push_str(l.trim());
            signature.push(' ');
            if l.contains('{') || l.trim_end().ends_with(';') {
                break;
            }
        }
        let compact: String = signature
            .split_whitespace()
            .collect::<String>()
            .replace(",>", ">");
        if compact.contains(",String>") && compact.contains("Result<") {
            bad.push(t.to_owned());
        }
    }
    bad
}

/// The source files of a crate (`src/`), relative to it.
fn sources(krate: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if krate.join("src").is_dir() {
        rust_files(&krate.join("src"), &mut files);
    }
    files.sort();
    files
}

fn our_crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// --- the rules over the tree ------------------------------------------------------------------

#[test]
fn crates_import_only_downward_along_the_layer_list() {
    let architecture =
        std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layers(&architecture);
    assert!(
        layers.len() >= 4,
        "ARCHITECTURE.md has a \"## Layers\" list: {layers:?}"
    );
    let crates = our_crates();
    let mut edges = Vec::new();
    for krate in &crates {
        for table in ["dependencies", "build-dependencies"] {
            for dependency in our_dependencies(krate, table) {
                if crates.contains(&dependency) {
                    edges.push((krate.clone(), dependency.clone()));
                }
            }
        }
        assert!(
            layers.iter().flatten().any(|c| c == krate),
            "crates/{krate} is in no layer of ARCHITECTURE.md's list"
        );
    }
    let bad = upward_imports(&layers, &edges);
    assert!(bad.is_empty(), "imports that are not downward: {bad:#?}");
}

#[test]
fn no_module_cycles_inside_a_crate() {
    let mut all = Vec::new();
    for krate in our_crates() {
        let root = workspace().join("crates").join(&krate);
        let files: Vec<(Vec<String>, String)> = sources(&root)
            .into_iter()
            .map(|f| {
                let relative = f.strip_prefix(root.join("src")).expect("under src");
                (
                    module_path(relative),
                    std::fs::read_to_string(&f).expect("read"),
                )
            })
            .collect();
        for cycle in cycles(&sibling_edges(&files)) {
            all.push(format!("{krate}: {cycle}"));
        }
    }
    assert!(
        all.is_empty(),
        "module cycles (move what both sides share into a module below them):\n{}",
        all.join("\n")
    );
}

/// Each source file of the crate at `root` over [`MAX_LINES`], with its length.
fn long_files(root: &Path) -> Vec<(PathBuf, usize)> {
    sources(root)
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file)
                .expect("read")
                .lines()
                .count();
            (lines > MAX_LINES).then_some((file, lines))
        })
        .collect()
}

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let mut long = Vec::new();
    for krate in our_crates() {
        for (file, lines) in long_files(&workspace().join("crates").join(&krate)) {
            long.push(format!(
                "crates/{krate}/{}: {lines}",
                relative(&file, &krate)
            ));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them along their seams): {long:#?}"
    );
}

#[test]
fn no_public_signature_returns_a_string_error() {
    let mut bad = Vec::new();
    for krate in our_crates() {
        for file in sources(&workspace().join("crates").join(&krate)) {
            let text = std::fs::read_to_string(&file).expect("read");
            for signature in string_results(&text) {
                bad.push(format!(
                    "crates/{krate}/{}: {signature}",
                    relative(&file, &krate)
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "Result<_, String> in public signatures (give the error a type): {bad:#?}"
    );
}

#[test]
fn the_runtimes_public_items_are_documented() {
    let lib = std::fs::read_to_string(workspace().join("crates/runtime/src/lib.rs"))
        .expect("runtime lib.rs");
    assert!(
        lib.lines()
            .any(|l| l.trim() == "#![warn(missing_docs)]" || l.trim() == "#![deny(missing_docs)]"),
        "crates/runtime/src/lib.rs turns on missing_docs (clippy -D warnings makes it an error)"
    );
}

fn relative(file: &Path, krate: &str) -> String {
    file.strip_prefix(workspace().join("crates").join(krate))
        .expect("in the crate")
        .display()
        .to_string()
}

// --- each rule fails on a scratch example -----------------------------------------------------

#[test]
fn the_layer_rule_finds_an_upward_import() {
    let architecture =
        "# A\n\n## Layers\n\n1. `runtime`, `enclave`\n2. `crypto`\n3. `api`\n\n## Next\n\n4. `x`\n";
    let layers = layers(architecture);
    assert_eq!(
        layers,
        vec![vec!["runtime", "enclave"], vec!["crypto"], vec!["api"]]
    );
    let edge = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert!(
        upward_imports(&layers, &[edge("api", "crypto"), edge("crypto", "runtime")]).is_empty()
    );
    assert_eq!(
        upward_imports(
            &layers,
            &[edge("crypto", "api"), edge("runtime", "enclave")]
        ),
        vec![
            "crypto -> api (not a lower layer)",
            "runtime -> enclave (not a lower layer)"
        ]
    );
}

#[test]
fn the_cycle_rule_finds_a_cycle_between_sibling_modules() {
    let file = |path: &[&str], text: &str| {
        (
            path.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            text.to_owned(),
        )
    };
    let acyclic = vec![
        file(
            &[],
            "mod journal;\nmod health;\npub use journal::Journal;\n",
        ),
        file(&["journal"], "use crate::event::Event;\n"),
        file(
            &["health"],
            "use crate::{event::Event, journal::Journal};\n",
        ),
        file(&["event"], "//! uses crate::health in a comment only\n"),
        file(&["bus"], "mod mailbox;\nstruct Bus;\n"),
        file(
            &["bus", "mailbox"],
            "use super::Bus;\n#[cfg(test)]\nmod tests {\n    use crate::health::X;\n}\n",
        ),
    ];
    assert_eq!(cycles(&sibling_edges(&acyclic)), Vec::<String>::new());

    let mut cyclic = acyclic.clone();
    cyclic[4] = file(&["event"], "use crate::health::Level;\n");
    assert_eq!(
        cycles(&sibling_edges(&cyclic)),
        vec![
            "event -> health -> event",
            "event -> health -> journal -> event"
        ]
    );
    let nested = vec![
        file(&["bus"], "mod a;\nmod b;\n"),
        file(&["bus", "a"], "use super::b::B;\n"),
        file(&["bus", "b"], "pub(crate) use crate::bus::{a::A, self};\n"),
    ];
    assert_eq!(
        cycles(&sibling_edges(&nested)),
        vec!["bus::a -> bus::b -> bus::a"]
    );
}

#[test]
fn the_length_rule_finds_a_long_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("deep")).expect("src");
    std::fs::write(src.join("lib.rs"), "//! x\n".repeat(MAX_LINES)).expect("write");
    std::fs::write(src.join("deep/long.rs"), "//! x\n".repeat(MAX_LINES + 1)).expect("write");
    let long = long_files(dir.path());
    assert_eq!(long, vec![(src.join("deep/long.rs"), MAX_LINES + 1)]);
}

#[test]
fn the_string_error_rule_finds_a_public_string_result() {
    let text = "pub fn parse(s: &str) -> Result<u8, String> {\n}\n\
                pub async fn spread(\n    s: &str,\n) -> Result<\n    Vec<u8>,\n    String,\n> {\n}\n\
                fn private() -> Result<(), String> {}\n\
                pub trait Service {\n    fn validate(&self) -> Result<(), String> {\n        Ok(())\n    }\n}\n\
                trait Private {\n    fn veto(&self) -> Result<(), String>;\n}\n\
                pub fn typed() -> Result<(), Error> {}\n\
                pub fn name() -> String {}\n";
    assert_eq!(
        string_results(text),
        vec![
            "pub fn parse(s: &str) -> Result<u8, String> {",
            "pub async fn spread(",
            "fn validate(&self) -> Result<(), String> {"
        ]
    );
}
