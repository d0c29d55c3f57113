//! Loaded ONNX models kept in memory within the service's budget (`cache_bytes`), the least
//! recently used evicted first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::onnx;

/// What a loaded ONNX model is counted as against `cache_bytes`: its file, times this (tract keeps
/// the weights, and packs some of them again for its kernels).
pub(crate) const LOADED_COST_FACTOR: u64 = 3;

/// The loaded models, keyed by (owner, model id), with their cost against the budget.
#[derive(Default)]
pub(crate) struct Cache {
    pub(crate) models: HashMap<(String, String), (Arc<onnx::Loaded>, u64)>,
    order: VecDeque<(String, String)>,
    used: u64,
}

impl Cache {
    /// The model and the size of its file.
    pub(crate) fn get(&mut self, key: &(String, String)) -> Option<(Arc<onnx::Loaded>, u64)> {
        let (model, cost) = self.models.get(key)?;
        let found = (model.clone(), cost / LOADED_COST_FACTOR);
        if self.order.back() != Some(key) {
            self.order.retain(|k| k != key);
            self.order.push_back(key.clone());
        }
        Some(found)
    }

    /// Keeps `model` within `budget`, evicting the least recently used; a model that cannot fit
    /// alone (the budget was lowered since it was uploaded) is not kept.
    pub(crate) fn insert(
        &mut self,
        key: (String, String),
        model: Arc<onnx::Loaded>,
        cost: u64,
        budget: u64,
    ) {
        self.remove(&key);
        if cost > budget {
            return;
        }
        self.shrink(budget - cost);
        self.used += cost;
        self.order.push_back(key.clone());
        self.models.insert(key, (model, cost));
    }

    /// Evicts the least recently used models until at most `budget` is used.
    pub(crate) fn shrink(&mut self, budget: u64) {
        while self.used > budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, c)) = self.models.remove(&oldest) {
                self.used -= c;
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &(String, String)) {
        if let Some((_, c)) = self.models.remove(key) {
            self.used -= c;
            self.order.retain(|k| k != key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Arc<onnx::Loaded> {
        Arc::new(onnx::load(include_bytes!("../tests/fixtures/mlp.onnx")).expect("fixture loads"))
    }

    fn key(id: &str) -> (String, String) {
        ("alice".into(), id.into())
    }

    #[test]
    fn the_cache_stays_within_its_budget_and_evicts_the_least_recently_used() {
        let mut cache = Cache::default();
        let m = model();
        cache.insert(
            key("a"),
            m.clone(),
            4 * LOADED_COST_FACTOR,
            10 * LOADED_COST_FACTOR,
        );
        cache.insert(
            key("b"),
            m.clone(),
            4 * LOADED_COST_FACTOR,
            10 * LOADED_COST_FACTOR,
        );
        // Using a makes b the least recently used.
        assert_eq!(cache.get(&key("a")).map(|(_, size)| size), Some(4));
        cache.insert(
            key("c"),
            m.clone(),
            4 * LOADED_COST_FACTOR,
            10 * LOADED_COST_FACTOR,
        );
        assert!(cache.used <= 10 * LOADED_COST_FACTOR);
        assert!(cache.get(&key("b")).is_none(), "b was evicted");
        assert!(cache.get(&key("a")).is_some() && cache.get(&key("c")).is_some());

        // A model larger than the whole budget is not kept, and evicts nothing.
        cache.insert(
            key("huge"),
            m,
            11 * LOADED_COST_FACTOR,
            10 * LOADED_COST_FACTOR,
        );
        assert!(cache.get(&key("huge")).is_none());
        assert_eq!(cache.used, 8 * LOADED_COST_FACTOR);
        cache.remove(&key("a"));
        assert_eq!(cache.used, 4 * LOADED_COST_FACTOR);
    }
}
