//! The journal over HTTP: the event stream that resumes, and a tampered journal.

use super::*;

#[tokio::test(start_paused = true)]
async fn the_event_stream_resumes_after_last_event_id_without_gaps_or_duplicates() {
    let h = harness(true).await;
    // Some history to resume into.
    for _ in 0..3 {
        let since = h.runtime.journal().last_seq();
        h.runtime
            .restart(&ServiceName::new("app").expect("name"))
            .await
            .expect("restart");
        h.runtime
            .journal()
            .wait_for(since, Duration::from_secs(60), |e| {
                matches!(e.event, Event::Up { .. })
            })
            .await
            .expect("up");
    }
    let last = h.runtime.journal().last_seq();
    let resume_from = last / 2;
    let req = Request::builder()
        .uri("/v1/events/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("last-event-id", resume_from.to_string())
        .body(Body::empty())
        .expect("req");
    let response = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let mut ids = Vec::new();
    use futures::StreamExt;
    while ids.last().copied().unwrap_or(0) < last {
        let chunk = body.next().await.expect("more events").expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                ids.push(id.trim().parse::<u64>().expect("numeric id"));
            }
        }
    }
    let expected: Vec<u64> = (resume_from + 1..=last).collect();
    assert_eq!(ids, expected);
    let req = Request::builder()
        .uri("/v1/events/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("last-event-id", "yesterday")
        .body(Body::empty())
        .expect("req");
    let response = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    h.runtime.shutdown().await;
}

/// docs/api.md: 409 `journal.integrity`, naming the entry, when a past entry read from
/// `journal.log` was modified; the recent window, held in memory, still reads.
#[tokio::test]
async fn error_code_journal_integrity_is_409_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    {
        let (journal, _) = Journal::open(&path).expect("open");
        // More than the journal keeps in memory, so the oldest are read back from the file.
        for i in 0..8300 {
            journal.append(
                None,
                None,
                Event::Audit {
                    action: "test.filler".into(),
                    subject: format!("entry {i}"),
                    detail: Default::default(),
                },
                runtime::journal::Cause::Journal,
            );
        }
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let tampered = text.replacen("\"subject\":\"entry 1\"", "\"subject\":\"entry X\"", 1);
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).expect("tamper");
    let (journal, report) = Journal::open(&path).expect("reopen");
    assert!(report.violation.is_some(), "{report:?}");
    let h = start(Setup {
        journal: Some(journal),
        dir: Some(dir),
        ..Setup::default()
    })
    .await;

    let answer = send(&h.app, "GET", "/v1/events?since=0", Some(TOKEN), "").await;
    assert_error(&answer, StatusCode::CONFLICT, "journal.integrity", None);
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("journal entry 2 ")),
        "{}",
        answer.2
    );
    let recent = h.runtime.journal().last_seq() - 10;
    let (status, _, body) = send(
        &h.app,
        "GET",
        &format!("/v1/events?since={recent}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}
