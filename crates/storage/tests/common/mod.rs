//! What the storage test targets share.

use runtime::Journal;
use runtime::journal::{Event, ExitOutcome};

/// Waits until storage has failed and returns the reason it gave.
pub(crate) async fn failure(journal: &Journal) -> String {
    let exited = journal
        .wait_for(0, std::time::Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&storage::NAME)
                && matches!(
                    e.event,
                    Event::Exited {
                        outcome: ExitOutcome::Error { .. },
                        ..
                    }
                )
        })
        .await
        .expect("storage exits with an error");
    match &exited.event {
        Event::Exited {
            outcome: ExitOutcome::Error { message },
            ..
        } => message.clone(),
        other => panic!("unexpected {other:?}"),
    }
}
