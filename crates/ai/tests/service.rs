//! The ai service's promises about the models it keeps: a stored model that is no longer what was
//! uploaded is refused, `cache_bytes` applies live, a model over a limit is refused at upload as too
//! large, a model that makes tract panic is a typed error for that request only, and deleting an
//! account takes its models (cached and stored) and nobody else's; a trained model reports the
//! size of its stored parameters, and logistic regression its log-loss on the training rows.
//! Training cannot be used to exhaust the service: an account has at most
//! `max_active_jobs_per_account` jobs queued or running (another account is not affected), a job
//! over `max_training_work` is refused at submit with its figure, and a cancel is seen inside a
//! long iteration.
//!
//! What the cache holds is seen from outside by tampering with the stored copy: a model still
//! cached answers from memory, one that is not is read back from storage and refused.

mod common;

use std::time::Duration;

use ai::{Error, JobState, Params, PredictInput, Request, TrainRequest};
use common::{Fixture, fixture, start, start_with, tensors};
use runtime::journal::Event;

fn mlp() -> Vec<u8> {
    std::fs::read(fixture("mlp.onnx")).expect("model")
}

fn mlp_input() -> PredictInput {
    tensors("x", vec![1, 4], vec![0.5; 4])
}

fn big() -> Vec<u8> {
    std::fs::read(fixture("mlp_big.onnx")).expect("model")
}

fn big_input() -> PredictInput {
    tensors("x", vec![1, 32], vec![0.5; 32])
}

impl Fixture {
    /// Changes the first stored chunk of `owner`'s model `id` through the storage service, as a
    /// bug (or anything else with the account's storage) could: one byte flipped, same length.
    async fn tamper(&self, owner: &str, id: &str) {
        let key = format!(".ai/models/{id}/0");
        let mut chunk = self
            .storage
            .call(|reply| storage::Request::Get {
                namespace: owner.into(),
                key: key.clone(),
                reply,
            })
            .await
            .expect("storage answers")
            .expect("the model's first chunk is stored")
            .data;
        let middle = chunk.len() / 2;
        chunk[middle] ^= 0x55;
        self.storage
            .call(|reply| storage::Request::Put {
                namespace: owner.into(),
                key,
                value: chunk,
                reply,
            })
            .await
            .expect("storage answers")
            .expect("put");
    }

    /// Restarts the ai service (a new incarnation starts with an empty cache) and waits until it
    /// is up again.
    async fn restart_ai(&self) {
        let journal = self.rt.journal();
        let since = journal.last_seq();
        self.rt.client().restart(&ai::NAME).await.expect("restart");
        journal
            .wait_for(since, Duration::from_secs(60), |e| {
                e.service.as_ref() == Some(&ai::NAME) && matches!(e.event, Event::Up { .. })
            })
            .await
            .expect("ai is up again");
    }

    async fn models(&self, owner: &str) -> Vec<String> {
        self.ask(|reply| Request::Models {
            owner: owner.into(),
            reply,
        })
        .await
        .expect("models")
        .into_iter()
        .map(|m| m.id)
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_file_whose_stored_bytes_no_longer_match_their_sha256_is_refused() {
    let f = start(|_| {}).await;
    let info = f.upload("alice", mlp()).await.expect("uploaded");
    f.predict("alice", &info.id, mlp_input())
        .await
        .expect("the intact model answers");
    f.tamper("alice", &info.id).await;
    // Loaded again from storage (a new incarnation has nothing cached): refused, every time.
    f.restart_ai().await;
    for _ in 0..2 {
        match f.predict("alice", &info.id, mlp_input()).await {
            Err(Error::Integrity(m)) => assert!(m.contains("SHA-256"), "{m}"),
            other => panic!("expected an integrity error, got {other:?}"),
        }
    }
    // The service serves on: the model is still listed, and another model uploads and answers.
    assert_eq!(f.models("alice").await, vec![info.id.clone()]);
    let fresh = f.upload("alice", mlp()).await.expect("uploaded");
    f.predict("alice", &fresh.id, mlp_input())
        .await
        .expect("an intact model answers");
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_bytes_applies_live() {
    let f = start(|_| {}).await;
    let older = f.upload("alice", big()).await.expect("uploaded");
    let newer = f.upload("alice", big()).await.expect("uploaded");
    // Both are cached (256 MiB by default); using the older one makes the newer the least
    // recently used.
    f.predict("alice", &older.id, big_input())
        .await
        .expect("answers");
    f.tamper("alice", &older.id).await;
    f.tamper("alice", &newer.id).await;
    // Cached, both still answer from memory.
    for id in [&older.id, &newer.id] {
        f.predict("alice", id, big_input()).await.expect("cached");
    }
    f.predict("alice", &older.id, big_input())
        .await
        .expect("cached");

    // 1 MiB holds one of them loaded (3 × 300 KB), not two. The change applies at once: the least
    // recently used is let go, and so read back (and refused) when next asked for.
    let size = big().len();
    f.reconfigure_ai(|spec| {
        spec.set(&ai::CACHE_BYTES, 1 << 20);
        spec.set(&ai::MAX_MODEL_BYTES, size);
    })
    .await;
    f.predict("alice", &older.id, big_input())
        .await
        .expect("still cached");
    assert!(
        matches!(
            f.predict("alice", &newer.id, big_input()).await,
            Err(Error::Integrity(_))
        ),
        "the least recently used model was evicted when the budget was lowered"
    );
    // And the lowered limits refuse at upload what they no longer allow, naming the setting.
    let mut bigger = big();
    bigger.push(0);
    match f.upload("alice", bigger).await {
        Err(Error::TooLarge { setting, .. }) => assert_eq!(setting, ai::MAX_MODEL_BYTES.name()),
        other => panic!("expected too large, got {other:?}"),
    }
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_a_limit_is_too_large_at_upload() {
    // Over the service's own limit, and over the storage service's value limit (a chunk is
    // 512 KiB; storage here takes 64 KiB): both are the caller's problem, not an outage.
    let f = start_with(
        |spec| spec.set(&ai::MAX_MODEL_BYTES, 1 << 20),
        |spec| spec.set(&storage::MAX_VALUE_BYTES, 64 << 10),
    )
    .await;
    match f.upload("alice", vec![0; (1 << 20) + 1]).await {
        Err(Error::TooLarge { setting, .. }) => assert_eq!(setting, ai::MAX_MODEL_BYTES.name()),
        other => panic!("expected too large, got {other:?}"),
    }
    match f.upload("alice", big()).await {
        Err(Error::TooLarge {
            service, setting, ..
        }) => assert_eq!(
            (service, setting),
            ("storage", storage::MAX_VALUE_BYTES.name())
        ),
        other => panic!("expected too large, got {other:?}"),
    }
    // Nothing of the refused model was kept, and a small one still fits.
    assert!(f.models("alice").await.is_empty());
    let small = f.upload("alice", mlp()).await.expect("uploaded");
    assert_eq!(f.models("alice").await, vec![small.id]);
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_removes_its_models_and_no_one_elses() {
    let f = start(|_| {}).await;
    let alices = f.upload("alice", mlp()).await.expect("uploaded");
    let bobs = f.upload("bob", mlp()).await.expect("uploaded");
    for (owner, id) in [("alice", &alices.id), ("bob", &bobs.id)] {
        f.predict(owner, id, mlp_input()).await.expect("cached");
    }
    // A long training job of alice's, running when her account goes.
    let job = f
        .train(TrainRequest {
            name: None,
            model: Params::Kmeans {
                k: 60,
                n_init: 100,
                seed: 1,
            },
            dataset: ai::Dataset {
                features: (0..40_000)
                    .map(|i| vec![(i % 997) as f64, (i % 113) as f64, (i % 7) as f64])
                    .collect(),
                targets: None,
            },
            test_fraction: 0.0,
        })
        .await
        .expect("accepted");
    assert_eq!(job.state, JobState::Pending);

    // What deleting the account does (crates/api/src/account.rs): the ai service purges the
    // owner, then the account service drops the owner's storage namespace.
    f.ask(|reply| Request::Purge {
        owner: "alice".into(),
        reply,
    })
    .await
    .expect("purged");
    f.storage
        .call(|reply| storage::Request::DropNamespace {
            namespace: "alice".into(),
            reply,
        })
        .await
        .expect("storage answers")
        .expect("dropped");

    // Alice's model is gone, from the cache too: not served, not listed; her job is forgotten.
    assert!(matches!(
        f.predict("alice", &alices.id, mlp_input()).await,
        Err(Error::NotFound(_))
    ));
    assert!(f.models("alice").await.is_empty());
    assert!(matches!(
        f.ask(|reply| Request::Job {
            owner: "alice".into(),
            id: job.id.clone(),
            wait: Duration::ZERO,
            reply,
        })
        .await,
        Err(Error::JobNotFound(_))
    ));
    // Bob's is untouched.
    assert_eq!(f.models("bob").await, vec![bobs.id.clone()]);
    f.predict("bob", &bobs.id, mlp_input())
        .await
        .expect("bob's model answers");
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_makes_tract_panic_is_a_typed_error_and_the_service_serves_on() {
    let f = start(|_| {}).await;
    let journal = f.rt.journal();
    let since = journal.last_seq();
    let read = |name: &str| std::fs::read(fixture(name)).expect("fixture");
    // tract panics typing this model (see fixtures/README.md): refused as an invalid model, in the
    // words only a caught panic gets.
    match f.upload("alice", read("panic_on_load.onnx")).await {
        Err(Error::InvalidModel(m)) => assert!(m.contains("broke the ONNX engine"), "{m}"),
        other => panic!("expected tract's panic as an invalid model, got {other:?}"),
    }
    // This one loads, and tract panics running it: an inference error for that request, each time
    // (answered from the cache on the service's own task, then loaded again after a restart).
    let info = f
        .upload("alice", read("panic_on_predict.onnx"))
        .await
        .expect("tract loads it");
    let input = || tensors("x", vec![1, 4], vec![0.5; 4]);
    for _ in 0..2 {
        match f.predict("alice", &info.id, input()).await {
            Err(Error::Inference(m)) => assert!(m.contains("broke the ONNX engine"), "{m}"),
            other => panic!("expected tract's panic as an inference error, got {other:?}"),
        }
    }
    // No incarnation of the service failed on the way.
    let exited = journal
        .read(since, usize::MAX)
        .expect("journal")
        .into_iter()
        .filter(|e| e.service.as_ref() == Some(&ai::NAME))
        .filter(|e| matches!(e.event, Event::Exited { .. }))
        .count();
    assert_eq!(exited, 0);
    // It serves on: a good model uploads and answers.
    let good = f.upload("alice", mlp()).await.expect("uploaded");
    f.predict("alice", &good.id, mlp_input())
        .await
        .expect("a good model answers");
    f.restart_ai().await;
    match f.predict("alice", &info.id, input()).await {
        Err(Error::Inference(m)) => assert!(m.contains("broke the ONNX engine"), "{m}"),
        other => panic!("expected tract's panic as an inference error, got {other:?}"),
    }
    f.predict("alice", &good.id, mlp_input())
        .await
        .expect("a good model answers");
    f.rt.shutdown().await;
}

/// Eight rows, one feature, labels that overlap (so the fit is not degenerate); the last two are
/// held out at `test_fraction` 0.25.
fn overlapping() -> ai::train::Dataset {
    ai::train::Dataset {
        features: (0..8).map(|i| vec![f64::from(i)]).collect(),
        targets: Some(vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]),
    }
}

async fn trained(f: &Fixture, model: Params) -> ai::ModelInfo {
    let job = f
        .train(TrainRequest {
            name: None,
            model,
            dataset: overlapping(),
            test_fraction: 0.25,
        })
        .await
        .expect("accepted");
    let job = f.wait(&job.id).await;
    assert_eq!(job.state, JobState::Completed, "{job:?}");
    job.model.expect("a model")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trained_model_reports_the_size_of_its_stored_parameters() {
    let f = start(|_| {}).await;
    for params in [
        Params::LinearRegression,
        Params::LogisticRegression { c: 1.0 },
    ] {
        let model = trained(&f, params.clone()).await;
        // The parameters the service stores and hashes, trained again outside it.
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let (parameters, _) =
            ai::train::train(&overlapping(), &params, 0.25, &cancel).expect("trained");
        let stored = serde_json::to_vec(&parameters).expect("parameters encode");
        assert_eq!(
            model.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)),
            "the hash covers the stored parameters"
        );
        assert_eq!(model.size_bytes, stored.len() as u64, "{model:?}");
    }
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logistic_regression_reports_its_log_loss_on_the_training_rows() {
    let f = start(|_| {}).await;
    let model = trained(&f, Params::LogisticRegression { c: 1.0 }).await;
    let metrics = model.metrics.clone().expect("metrics");
    let data = overlapping();
    let train_rows = data.features[..6].to_vec();
    let labels = &data.targets.as_deref().expect("targets")[..6];
    let answer = f
        .predict(
            "alice",
            &model.id,
            PredictInput::Features {
                features: train_rows,
            },
        )
        .await
        .expect("predicted");
    let probabilities: Vec<f64> = answer["probabilities"]
        .as_array()
        .expect("probabilities")
        .iter()
        .map(|p| p.as_f64().expect("a number"))
        .collect();
    let expected = probabilities
        .iter()
        .zip(labels)
        .map(|(p, y)| -(y * p.ln() + (1.0 - y) * (1.0 - p).ln()))
        .sum::<f64>()
        / 6.0;
    let reported = metrics.log_loss_train.expect("log_loss_train is reported");
    assert!(
        (reported - expected).abs() < 1e-9,
        "log_loss_train {reported}, from the predictions {expected}"
    );
    assert!(metrics.log_loss_test.is_some(), "{metrics:?}");
    f.rt.shutdown().await;
}

/// `max_training_work` at its highest: what the tests of a long job set.
const NO_WORK_BOUND: u64 = 1_000_000_000_000_000_000;

/// A k-means job far longer than any test: its k-means++ start alone is about 4 × 10¹² distances
/// (20 000 rows, k = 20 000), before the first Lloyd iteration. It only ends by being cancelled.
fn endless() -> TrainRequest {
    TrainRequest {
        name: None,
        model: Params::Kmeans {
            k: 20_000,
            n_init: 1,
            seed: 0,
        },
        dataset: ai::train::Dataset {
            features: (0..20_000).map(|i| vec![f64::from(i)]).collect(),
            targets: None,
        },
        test_fraction: 0.0,
    }
}

impl Fixture {
    async fn train_as(&self, owner: &str, request: TrainRequest) -> Result<ai::JobInfo, Error> {
        self.ask(|reply| Request::Train {
            owner: owner.into(),
            request: Box::new(request),
            reply,
        })
        .await
    }

    /// Cancels `owner`'s job `id`; the answer comes once the job has ended.
    async fn cancel(&self, owner: &str, id: &str) -> ai::JobInfo {
        self.ask(|reply| Request::Cancel {
            owner: owner.into(),
            id: id.into(),
            reply,
        })
        .await
        .expect("the job is found")
    }

    /// The job once its work has started (the state moves Pending → Running as the service hears
    /// so; each look is a round trip to the service, no timer).
    async fn running(&self, owner: &str, id: &str) {
        loop {
            let job = self
                .ask(|reply| Request::Job {
                    owner: owner.into(),
                    id: id.into(),
                    wait: Duration::ZERO,
                    reply,
                })
                .await
                .expect("job");
            match job.state {
                JobState::Running => return,
                JobState::Pending => tokio::task::yield_now().await,
                _ => panic!("the job ended: {job:?}"),
            }
        }
    }
}

/// The attack: one account floods the service with training jobs, each holding its dataset in
/// memory until it has run. Past `max_active_jobs_per_account` the submissions are refused
/// (retryable, the setting named) and hold nothing; another account still trains; once a job of
/// the account has ended it may submit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_has_at_most_max_active_jobs_per_account_training_jobs() {
    let f = start(|spec| {
        spec.set(&ai::MAX_ACTIVE_JOBS_PER_ACCOUNT, 2);
        spec.set(&ai::MAX_TRAINING_WORK, NO_WORK_BOUND);
    })
    .await;
    let mut accepted = Vec::new();
    for _ in 0..20 {
        match f.train_as("alice", endless()).await {
            Ok(job) => accepted.push(job.id),
            Err(e @ Error::TooManyJobs { active: 2 }) => {
                use runtime::Classify;
                assert!(
                    matches!(e.kind(), runtime::ErrorKind::Limited { .. }),
                    "{e:?}"
                );
                assert_eq!(e.code(), "ai.too_many_jobs");
                let m = e.to_string();
                assert!(m.contains("services.ai.max_active_jobs_per_account"), "{m}");
            }
            Err(e) => panic!("expected a refusal for too many jobs, got {e:?}"),
        }
    }
    assert_eq!(accepted.len(), 2, "two accepted of twenty");
    let bob = f
        .train_as("bob", endless())
        .await
        .expect("bob is not affected");
    // One thread trains: whichever job runs is cancelled inside its iteration, then the queued
    // ones see their flags as they get the thread.
    let (a, b, c) = tokio::join!(
        f.cancel("alice", &accepted[0]),
        f.cancel("alice", &accepted[1]),
        f.cancel("bob", &bob.id)
    );
    for job in [a, b, c] {
        assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    }
    let again = f
        .train_as("alice", endless())
        .await
        .expect("once its jobs have ended, the account may submit again");
    assert_eq!(
        f.cancel("alice", &again.id).await.state,
        JobState::Cancelled
    );
    f.rt.shutdown().await;
}

/// A job whose work (rows × features × ..., counted before it runs) is over `max_training_work`
/// is refused at submit as too large, with the figure and the setting; one under it trains. The
/// count saturates instead of overflowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_max_training_work_is_refused_at_submit() {
    let f = start(|spec| spec.set(&ai::MAX_TRAINING_WORK, 1_000)).await;
    let request = |model| TrainRequest {
        name: None,
        model,
        dataset: overlapping(),
        test_fraction: 0.25,
    };
    // Eight rows, one feature: 8 × 1² for least squares, 8 × (1 + 1)² × 100 for Newton's method.
    let job = f
        .train(request(Params::LinearRegression))
        .await
        .expect("work 8 is accepted");
    assert_eq!(f.wait(&job.id).await.state, JobState::Completed);
    match f
        .train(request(Params::LogisticRegression { c: 1.0 }))
        .await
    {
        Err(
            e @ Error::TooLarge {
                size: 3_200,
                limit: 1_000,
                setting: "max_training_work",
                ..
            },
        ) => {
            let m = e.to_string();
            assert!(m.contains("3200") && m.contains("max_training_work"), "{m}");
        }
        other => panic!("expected too large, got {other:?}"),
    }
    assert_eq!(
        f.ask(|reply| Request::Jobs {
            owner: "alice".into(),
            reply
        })
        .await
        .expect("jobs")
        .len(),
        1,
        "the refused job was never made"
    );
    let huge = Params::Kmeans {
        k: usize::MAX,
        n_init: usize::MAX,
        seed: 0,
    };
    assert_eq!(ai::train::work(usize::MAX, usize::MAX, &huge), u64::MAX);
    assert_eq!(
        ai::train::work(1 << 20, 1 << 20, &Params::LogisticRegression { c: 1.0 }),
        u64::MAX
    );
    f.rt.shutdown().await;
}

/// A cancel is seen inside a long iteration, not at its end: the job's k-means++ start would take
/// hours, and cancelled while it runs, the job ends as cancelled (the cancel's answer is the
/// job's end, awaited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_seen_inside_a_long_iteration() {
    let f = start(|spec| spec.set(&ai::MAX_TRAINING_WORK, NO_WORK_BOUND)).await;
    let job = f.train(endless()).await.expect("accepted");
    f.running("alice", &job.id).await;
    let cancelled = f.cancel("alice", &job.id).await;
    assert_eq!(cancelled.state, JobState::Cancelled, "{cancelled:?}");
    assert!(cancelled.model.is_none() && cancelled.finished_ms.is_some());
    f.rt.shutdown().await;
}
