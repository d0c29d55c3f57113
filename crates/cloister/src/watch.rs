//! Watches the file given to `cloister run --config` and applies each saved version.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use runtime::reconfig::{Handle, Outcome, Source};
use tokio_util::sync::CancellationToken;

/// Editors save in bursts (truncate, write, rename); wait for this much quiet before reading.
const SETTLE: Duration = Duration::from_millis(300);

/// `initial` is the text the runtime started with: only a different text counts as a new version, so
/// touching the file does not undo a version applied through the API since.
pub(crate) async fn config_file(
    path: PathBuf,
    initial: String,
    configs: Handle,
    cancel: CancellationToken,
) {
    let mut last = initial;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let target = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let name = target.file_name().map(|n| n.to_owned());
    let watched = name.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (inotify's access and close-nowrite) are not changes.
        if let Ok(event) = event
            && (event.kind.is_create() || event.kind.is_modify())
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == watched.as_deref())
        {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; apply changes with `cloister config apply`");
            return;
        }
    };
    // The directory, not the file: editors replace files by renaming over them.
    let dir = target
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config file's directory");
        return;
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            event = rx.recv() => if event.is_none() { return },
        }
        // Let the burst settle.
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(SETTLE) => break,
                event = rx.recv() => if event.is_none() { return },
            }
        }
        let text = match tokio::fs::read_to_string(&target).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, path = %target.display(), "cannot read the changed config file");
                continue;
            }
        };
        if text == last {
            continue;
        }
        last.clone_from(&text);
        match configs.apply(text, Source::File, false).await {
            Some(Outcome::Applied {
                version, changed, ..
            }) => {
                tracing::info!(version, ?changed, "applied the changed config file");
            }
            Some(Outcome::Unchanged { .. }) => {}
            Some(Outcome::Rejected { problems }) => {
                for p in problems {
                    tracing::error!(problem = %p, "the changed config file was rejected");
                }
            }
            Some(Outcome::RolledBack { reason, .. }) => {
                tracing::warn!(%reason, "the changed config file was rolled back");
            }
            None => return,
        }
    }
}
