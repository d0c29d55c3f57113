//! Predictions made on the caller's own task ([`ai::Inline`], as the HTTP API makes them) answer
//! what the service answers, only for a model the service has loaded and only while the service
//! takes requests: not another account's model, not a deleted one, not after a stop or before the
//! model is loaded again, and within the input limit the service last took from its settings. They
//! are counted in the service's figures as the calls they replace.

mod common;

use std::time::Duration;

use ai::{Error, PredictInput, Request};
use common::{Fixture, fixture, start, tensors};
use runtime::journal::Event;

fn mlp() -> Vec<u8> {
    std::fs::read(fixture("mlp.onnx")).expect("model")
}

fn input() -> PredictInput {
    tensors("x", vec![1, 4], vec![0.5, -1.0, 2.0, 0.25])
}

impl Fixture {
    /// The inline prediction of `owner`'s model `id`, as JSON, if one was made.
    fn inline_predict(
        &self,
        owner: &str,
        id: &str,
        input: &PredictInput,
    ) -> Option<Result<serde_json::Value, Error>> {
        self.inline
            .predict(&self.ai, owner, id, input)
            .map(|answer| answer.map(|p| serde_json::to_value(p).expect("a prediction serializes")))
    }

    /// Calls answered on the API's edge to the ai service (`handled`), and those counted as
    /// predictions.
    async fn answered(&self) -> (u64, u64) {
        let edges = self.rt.client().bus().edges();
        let edge = edges
            .iter()
            .find(|e| e.caller.is_none() && e.callee == ai::NAME)
            .expect("the test's edge to ai");
        let snapshot = self.rt.client().snapshot().await.expect("snapshot");
        let predictions = snapshot
            .services
            .iter()
            .find(|s| s.spec.name == ai::NAME)
            .expect("ai")
            .operations
            .iter()
            .find(|o| o.operation == "predict")
            .map_or(0, |o| o.calls);
        (edge.handled, predictions)
    }

    /// Changes the ai spec, and waits until the service has taken the change: any request it
    /// answers after the change has taken it first.
    async fn reconfigure_and_settle(&self, change: impl FnOnce(&mut runtime::Spec)) {
        self.reconfigure_ai(change).await;
        self.ask(|reply| Request::Jobs {
            owner: "alice".into(),
            reply,
        })
        .await
        .expect("jobs");
    }

    /// Waits for the ai service's journal entry after `since` that `event` matches.
    async fn wait_for(&self, since: u64, event: impl Fn(&Event) -> bool) {
        self.rt
            .journal()
            .wait_for(since, Duration::from_secs(60), |e| {
                e.service.as_ref() == Some(&ai::NAME) && event(&e.event)
            })
            .await
            .expect("the ai service's entry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_model_answers_on_the_callers_task_as_the_service_does_and_only_while_it_may() {
    let f = start(|_| {}).await;
    let model = f.upload("alice", mlp()).await.expect("uploaded");

    // Uploaded is loaded: the answer is made here, and it is the service's answer.
    let (handled, predictions) = f.answered().await;
    let here = f
        .inline_predict("alice", &model.id, &input())
        .expect("a loaded model answers inline")
        .expect("predicted");
    assert_eq!(
        f.answered().await,
        (handled + 1, predictions + 1),
        "an inline prediction is counted as the call it replaces"
    );
    let there = f
        .predict("alice", &model.id, input())
        .await
        .expect("the service predicts");
    assert_eq!(here, there);

    // Inputs that do not fit get the service's error, from here.
    let wrong = tensors("x", vec![1, 3], vec![0.5; 3]);
    assert!(matches!(
        f.inline_predict("alice", &model.id, &wrong),
        Some(Err(Error::Shape(_)))
    ));

    // Another account's model is not found here: the service answers that it does not exist.
    assert!(f.inline_predict("bob", &model.id, &input()).is_none());
    assert!(matches!(
        f.predict("bob", &model.id, input()).await,
        Err(Error::NotFound(_))
    ));

    // A lowered input limit applies here once the service has taken the change.
    f.reconfigure_and_settle(|spec| spec.set(&ai::MAX_INPUT_ELEMENTS, 3))
        .await;
    assert!(matches!(
        f.inline_predict("alice", &model.id, &input()),
        Some(Err(Error::TooLarge { .. }))
    ));
    f.reconfigure_and_settle(|_| {}).await;
    assert!(matches!(
        f.inline_predict("alice", &model.id, &input()),
        Some(Ok(_))
    ));

    // A stopped service answers nothing here either; started again, it has nothing loaded until
    // a prediction through it loads the model.
    let since = f.rt.journal().last_seq();
    f.rt.client().stop(&ai::NAME).await.expect("stop");
    f.wait_for(since, |e| matches!(e, Event::Stopped { .. }))
        .await;
    assert!(f.inline_predict("alice", &model.id, &input()).is_none());
    f.rt.client().start(&ai::NAME).await.expect("start");
    f.wait_for(since, |e| matches!(e, Event::Up { .. })).await;
    assert!(f.inline_predict("alice", &model.id, &input()).is_none());
    f.predict("alice", &model.id, input())
        .await
        .expect("the service loads and predicts");
    assert_eq!(
        f.inline_predict("alice", &model.id, &input())
            .expect("loaded again")
            .expect("predicted"),
        there
    );

    // Deleted through the service, the model is gone here at once.
    f.ask(|reply| Request::Delete {
        owner: "alice".into(),
        id: model.id.clone(),
        reply,
    })
    .await
    .expect("deleted");
    assert!(f.inline_predict("alice", &model.id, &input()).is_none());
    f.rt.shutdown().await;
}
