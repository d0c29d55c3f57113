//! The journal's tests: reopening, tampering, torn and damaged lines.

use super::*;

fn fill(j: &Journal, n: usize) {
    let svc = ServiceName::from_static("svc");
    for i in 0..n {
        j.append(
            Some(&svc),
            Some(i as u64),
            Event::Ready { replica: 0 },
            Cause::Startup,
        );
    }
}

#[test]
fn survives_reopen_and_reads_by_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, report) = Journal::open(&path).expect("open");
    assert_eq!(report, OpenReport::default());
    fill(&j, 5);
    drop(j);
    let (j, report) = Journal::open(&path).expect("reopen");
    assert_eq!(report.entries, 5);
    assert_eq!(report.violation, None);
    fill(&j, 1);
    let seqs: Vec<u64> = j.read(3, 10).expect("read").iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5, 6]);
    assert_eq!(j.read_file(0, 100).expect("file read").len(), 6);
}

#[test]
fn a_modified_past_entry_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, _) = Journal::open(&path).expect("open");
    fill(&j, 4);
    drop(j);
    let text = std::fs::read_to_string(&path).expect("read");
    let tampered = text.replacen("\"generation\":1", "\"generation\":7", 1);
    assert_ne!(text, tampered);
    std::fs::write(&path, tampered).expect("write");
    let (j, report) = Journal::open(&path).expect("reopen");
    let violation = report.violation.expect("tamper reported at open");
    assert!(violation.contains("entry 2 (line 2)"), "{violation}");
    match j.read_file(0, 100) {
        Err(JournalError::Tampered { seq: 2, .. }) => {}
        other => panic!("expected tamper at seq 2, got {other:?}"),
    }
}

#[test]
fn a_deleted_entry_breaks_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, _) = Journal::open(&path).expect("open");
    fill(&j, 3);
    drop(j);
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
    let (_, report) = Journal::open(&path).expect("reopen");
    assert!(
        report
            .violation
            .expect("reported")
            .contains("does not chain")
    );
}

/// Appends entries whose text is not all ASCII, so a cut can land inside a character.
fn fill_varied(j: &Journal, n: usize) {
    let svc = ServiceName::from_static("svc");
    for i in 0..n {
        j.append(
            Some(&svc),
            Some(i as u64),
            Event::Failed {
                reason: format!("naïve — attempt {i} ✓"),
            },
            Cause::Startup,
        );
    }
}

fn hashes(entries: &[Arc<Entry>]) -> Vec<(u64, String)> {
    entries.iter().map(|e| (e.seq, e.hash.clone())).collect()
}

/// Promise: a journal whose last line was cut mid-write opens, keeps every complete entry, and
/// appends on with a valid chain. Tried at every byte the last line could have been cut at.
#[test]
fn a_cut_journal_tail_is_read_back_and_continued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("whole.log");
    let (j, _) = Journal::open(&whole).expect("open");
    fill_varied(&j, 4);
    let written = j.read(0, usize::MAX).expect("read");
    drop(j);
    let bytes = std::fs::read(&whole).expect("read");
    let last_line = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .expect("several lines")
        + 1;
    let path = dir.path().join("journal.log");
    for cut in last_line + 1..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let (j, report) = Journal::open(&path).unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
        assert_eq!(
            (report.entries, report.torn_bytes, report.violation),
            (3, (cut - last_line) as u64, None),
            "cut at byte {cut}"
        );
        let kept = j.read(0, usize::MAX).expect("read");
        assert_eq!(hashes(&kept), hashes(&written[..3]), "cut at byte {cut}");
        fill_varied(&j, 1);
        let next = j.read(3, usize::MAX).expect("read");
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].seq, &next[0].prev), (4, &written[2].hash));
        drop(j);
        let (j, report) = Journal::open(&path).expect("reopen");
        assert_eq!(
            (report.entries, report.torn_bytes, report.violation),
            (4, 0, None),
            "cut at byte {cut}"
        );
        assert_eq!(
            j.read_file(0, usize::MAX)
                .expect("the chain verifies")
                .len(),
            4
        );
    }
}

/// A damaged line in the middle (edited into garbage, or bytes that are not text) is reported with
/// its line at open, the entries around it stay readable, and reading the file from disk refuses
/// the broken chain (what the API answers as `journal.integrity`).
#[test]
fn a_corrupted_middle_line_is_reported_and_the_rest_is_kept() {
    let garbage: [&[u8]; 3] = [
        b"{\"seq\":2,\"this is not",
        b"not json at all",
        b"\xff\xfe\x00 binary",
    ];
    for junk in garbage {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.log");
        let (j, _) = Journal::open(&path).expect("open");
        fill_varied(&j, 4);
        let written = j.read(0, usize::MAX).expect("read");
        drop(j);
        let text = std::fs::read(&path).expect("read");
        let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        let mut damaged = junk.to_vec();
        damaged.push(b'\n');
        lines[1] = &damaged;
        std::fs::write(&path, lines.concat()).expect("write");

        let (j, report) = Journal::open(&path).expect("a damaged journal still opens");
        let violation = report.violation.expect("the damage is reported");
        assert!(violation.contains("(line 2)"), "{violation}");
        assert_eq!(report.torn_bytes, 0);
        let kept = j.read(0, usize::MAX).expect("read");
        assert_eq!(
            hashes(&kept),
            [&written[0], &written[2], &written[3]]
                .iter()
                .map(|e| (e.seq, e.hash.clone()))
                .collect::<Vec<_>>()
        );
        fill_varied(&j, 1);
        assert_eq!(
            j.read(4, usize::MAX).expect("read")[0].prev,
            written[3].hash,
            "appends continue from the end of the file"
        );
        match j.read_file(0, usize::MAX) {
            Err(JournalError::Tampered { line: 2, .. }) => {}
            other => panic!("expected the damage at line 2, got {other:?}"),
        }
    }
}

#[test]
fn a_torn_tail_is_cut_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, _) = Journal::open(&path).expect("open");
    fill(&j, 2);
    drop(j);
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(b"{\"seq\":3,\"ti").expect("write");
    drop(f);
    let (j, report) = Journal::open(&path).expect("reopen");
    assert_eq!(report.torn_bytes, 12);
    assert_eq!(report.violation, None);
    fill(&j, 1);
    drop(j);
    let (_, report) = Journal::open(&path).expect("reopen again");
    assert_eq!(
        (report.entries, report.violation, report.torn_bytes),
        (3, None, 0)
    );
}

/// A line on disk is built from the hashed body and the hash, not by serializing the entry again:
/// it must still be byte for byte the entry's own JSON, for entries with and without a service and a
/// generation, and with text that JSON escapes.
#[test]
fn each_line_on_disk_is_the_entrys_own_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, _) = Journal::open(&path).expect("open");
    let svc = ServiceName::from_static("svc");
    j.append(None, None, Event::RuntimeStopped, Cause::Shutdown);
    j.append(
        Some(&svc),
        Some(3),
        Event::Failed {
            reason: "a \"quoted\" reason,\nwith a newline, a tab\t and é".into(),
        },
        Cause::Operator {
            command: "fault \\ \"panic\"".into(),
        },
    );
    j.append(
        Some(&svc),
        None,
        Event::Ready { replica: 2 },
        Cause::Startup,
    );
    let text = std::fs::read(&path).expect("read");
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let entries = j.read(0, 10).expect("read");
    assert_eq!(lines.len(), entries.len());
    for (line, entry) in lines.iter().zip(&entries) {
        let mut json = serde_json::to_vec(&**entry).expect("serializes");
        json.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(line),
            String::from_utf8_lossy(&json)
        );
    }
    drop(j);
    let (_, report) = Journal::open(&path).expect("reopen");
    assert_eq!((report.entries, report.violation), (3, None));
}

/// Appends `n` deferred entries, each echoed into `echoed`; returns what each append said about
/// being the only entry pending.
fn fill_deferred(j: &Journal, n: usize, echoed: &Arc<Mutex<Vec<u64>>>) -> Vec<bool> {
    let svc = ServiceName::from_static("svc");
    let echo: Echo = {
        let echoed = echoed.clone();
        Arc::new(move |e: &Arc<Entry>| echoed.lock().expect("echo list").push(e.seq))
    };
    (0..n)
        .map(|i| {
            j.append_deferred(
                Some(&svc),
                Some(i as u64),
                Event::Ready { replica: 0 },
                Cause::Startup,
                Some(&echo),
            )
        })
        .collect()
}

/// Promise: an entry appended without chaining is numbered at once, and is chained (broadcast,
/// echoed, in the chain) before any reader can see the journal: a read, a plain append and a chain
/// each make the pending entries whole first, in sequence order, and each is echoed exactly once.
#[test]
fn deferred_entries_are_whole_before_anyone_reads_them() {
    let j = Journal::in_memory();
    let mut live = j.subscribe();
    let echoed = Arc::new(Mutex::new(Vec::new()));
    // The first pending entry says so (its appender then has it chained); the others do not.
    assert_eq!(fill_deferred(&j, 3, &echoed), [true, false, false]);
    assert_eq!(j.last_seq(), 3, "numbered at once");
    assert!(
        live.try_recv().is_err(),
        "not broadcast before it is chained"
    );
    assert!(echoed.lock().expect("echo list").is_empty());

    // A read chains them first.
    let read: Vec<u64> = j.read(0, 10).expect("read").iter().map(|e| e.seq).collect();
    assert_eq!(read, [1, 2, 3]);
    assert_eq!(*echoed.lock().expect("echo list"), [1, 2, 3]);
    for seq in 1..=3 {
        assert_eq!(live.try_recv().expect("broadcast").seq, seq);
    }

    // A plain append after deferred ones chains them before itself, and returns its own entry.
    assert_eq!(fill_deferred(&j, 2, &echoed), [true, false]);
    let own = j.append(None, None, Event::RuntimeStopped, Cause::Shutdown);
    assert_eq!(own.seq, 6);
    assert_eq!(*echoed.lock().expect("echo list"), [1, 2, 3, 4, 5]);

    // And chain() does it on demand; nothing is chained or echoed twice.
    fill_deferred(&j, 1, &echoed);
    j.chain();
    j.chain();
    assert_eq!(*echoed.lock().expect("echo list"), [1, 2, 3, 4, 5, 7]);
    let all = j.read(0, 100).expect("read");
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "one chain, in sequence order");
        assert_eq!(pair[1].hash, disk::digest(&pair[1]));
    }
}

/// Promise: deferred entries reach the file, in one chain with the others: those chained by a
/// read, and those still pending when the last handle is dropped. The file verifies on reopen.
#[test]
fn deferred_entries_reach_the_file_even_if_only_the_drop_chains_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    let (j, _) = Journal::open(&path).expect("open");
    let echoed = Arc::new(Mutex::new(Vec::new()));
    fill(&j, 2);
    fill_deferred(&j, 3, &echoed);
    // Another thread's read chains them: the file has five lines.
    let reader = j.clone();
    std::thread::spawn(move || reader.read(0, 1).expect("read"))
        .join()
        .expect("reader");
    assert_eq!(
        std::fs::read_to_string(&path)
            .expect("file")
            .lines()
            .count(),
        5
    );
    fill_deferred(&j, 4, &echoed);
    drop(j);
    assert_eq!(echoed.lock().expect("echo list").len(), 7);
    let (j, report) = Journal::open(&path).expect("reopen");
    assert_eq!(
        (report.entries, report.violation, report.torn_bytes),
        (9, None, 0)
    );
    assert_eq!(j.last_seq(), 9);
}

/// Promise: reading by cursor from memory gives exactly the entries after the cursor, oldest first,
/// at most `limit` of them, for every cursor from before the first entry to past the last.
#[test]
fn a_read_by_cursor_gives_the_entries_after_it_up_to_the_limit() {
    let j = Journal::in_memory();
    fill(&j, 40);
    for since in 0..=42 {
        for limit in [0, 1, 7, 100] {
            let seqs: Vec<u64> = j
                .read(since, limit)
                .expect("read")
                .iter()
                .map(|e| e.seq)
                .collect();
            let expected: Vec<u64> = (since + 1..=40).take(limit).collect();
            assert_eq!(seqs, expected, "since {since}, limit {limit}");
        }
    }
}
