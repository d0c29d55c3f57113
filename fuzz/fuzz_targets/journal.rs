//! The journal file (one hash-chained JSON line per event; the host can cut or edit it): any
//! bytes as the file, opened as `cloister run` opens it (verified, a torn tail cut off), read back,
//! appended to, and opened again. An entry appended after an open that found nothing wrong must
//! verify at the next open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::Journal;
use runtime::journal::{Cause, Event};

fuzz_target!(|data: &[u8]| {
    let path = cloister_fuzz::scratch().join("journal.jsonl");
    std::fs::write(&path, data).expect("the scratch directory is writable");
    let Ok((journal, report)) = Journal::open(&path) else {
        return;
    };
    let _ = journal.read(0, 1000);
    journal.append(None, None, Event::RuntimeStopping, Cause::Shutdown);
    drop(journal);
    let (again, second) = Journal::open(&path).expect("a journal opened once opens again");
    assert_eq!(second.torn_bytes, 0, "the first open cut the torn tail off");
    if report.violation.is_none() {
        assert_eq!(
            second.violation, None,
            "an appended entry continues the chain"
        );
        assert_eq!(second.entries, report.entries + 1);
    }
    drop(again);
});
