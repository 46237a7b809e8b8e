//! Which engine serves each model id. With no checkpoint configured the motion preview serves
//! every id (and says so); once any checkpoint is configured, an id without one is not served:
//! requests for it are refused at submit time, never handed to the preview.

use std::collections::HashMap;
use std::sync::Arc;

use gallop_api::ModelId;
use gallop_engine::{Engine, EngineInfo, PreviewEngine};

/// Model id -> the engine that serves it.
#[derive(Clone)]
pub struct EngineMap {
    engines: HashMap<ModelId, Arc<dyn Engine>>,
}

impl EngineMap {
    /// Nothing configured: the motion preview serves every id.
    pub fn preview() -> Self {
        Self::every_model(Arc::new(PreviewEngine))
    }

    /// One engine for every id.
    pub fn every_model(engine: Arc<dyn Engine>) -> Self {
        Self {
            engines: ModelId::ALL.map(|m| (m, engine.clone())).into(),
        }
    }

    /// The operator's checkpoints; ids without one are not served. None configured: the preview.
    pub fn configured(engines: Vec<(ModelId, Arc<dyn Engine>)>) -> Self {
        if engines.is_empty() {
            return Self::preview();
        }
        Self::only(engines)
    }

    /// Exactly these engines, even none: ids without one are not served (the other ids are
    /// served upstream, or not at all).
    pub fn only(engines: Vec<(ModelId, Arc<dyn Engine>)>) -> Self {
        Self {
            engines: engines.into_iter().collect(),
        }
    }

    pub fn engine_for(&self, model: ModelId) -> Option<&Arc<dyn Engine>> {
        self.engines.get(&model)
    }

    /// What serves each id, in `ModelId::ALL` order; None for an id nothing serves.
    pub fn infos(&self) -> Vec<(ModelId, Option<EngineInfo>)> {
        ModelId::ALL
            .iter()
            .map(|&m| (m, self.engine_for(m).map(|e| e.info())))
            .collect()
    }

    /// Why a request for `model` is refused, or None when something serves it.
    pub fn refusal(&self, model: ModelId) -> Option<String> {
        if self.engines.contains_key(&model) {
            return None;
        }
        let served: Vec<&str> = ModelId::ALL
            .iter()
            .filter(|m| self.engines.contains_key(m))
            .map(|m| m.as_str())
            .collect();
        let served = match served.is_empty() {
            true => "no model from a local checkpoint".to_string(),
            false => served.join(", "),
        };
        Some(format!(
            "model {model} is not served here: no checkpoint is configured for it (this server \
             serves {served}). Use a served model, or ask the operator to add a checkpoint (or \
             an upstream) under [models.\"{model}\"] in the gallop serve --config file"
        ))
    }
}

impl std::fmt::Debug for EngineMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.infos()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_is_the_preview_for_every_id() {
        let map = EngineMap::configured(Vec::new());
        for (model, info) in map.infos() {
            assert_eq!(info.unwrap().engine, "preview", "{model}");
            assert!(map.refusal(model).is_none());
        }
    }

    #[test]
    fn an_id_without_a_checkpoint_is_refused_naming_the_model_and_the_fix() {
        let map = EngineMap::configured(vec![(ModelId::HhI2v, Arc::new(PreviewEngine) as _)]);
        assert!(map.refusal(ModelId::HhI2v).is_none());
        assert!(map.engine_for(ModelId::HhR2v).is_none());
        let why = map.refusal(ModelId::HhR2v).unwrap();
        assert!(
            why.contains("model alibaba/hh1.1-r2v is not served"),
            "{why}"
        );
        assert!(why.contains("serves alibaba/hh1-i2v"), "{why}");
        assert!(why.contains("[models.\"alibaba/hh1.1-r2v\"]"), "{why}");
        assert_eq!(map.infos()[1], (ModelId::HhR2v, None));
    }
}
