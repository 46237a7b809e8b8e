//! The VAE loader against the real checkpoints' manifests (every tensor name and shape of the
//! published Wan2.1 and Wan2.2 VAEs, from scripts/fixtures/vae.py on torch's meta device): built
//! from the manifest's config, it must read every tensor, each with the manifest's shape, and
//! nothing else. The weights are zero-stride broadcasts, so nothing of real size is allocated.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;
use gallop_wan::vae::{AutoencoderKLWan, VaeConfig};

/// Hands out zeros of the manifest's shapes and records every name asked for.
struct ManifestBackend {
    shapes: BTreeMap<String, Vec<usize>>,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl ManifestBackend {
    fn zeros(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let Some(shape) = self.shapes.get(name) else {
            candle_core::bail!("the loader read {name:?}, which is not in the checkpoint");
        };
        self.read.lock().unwrap().insert(name.to_string());
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape.as_slice())
    }
}

impl SimpleBackend for ManifestBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let t = self.zeros(name, dtype, dev)?;
        if t.dims() != s.dims() {
            candle_core::bail!(
                "{name}: loader wants {:?}, checkpoint has {:?}",
                s.dims(),
                t.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.zeros(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
}

fn check_manifest(checkpoint: &str, z_dim: usize, tensors: usize) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("manifests/{checkpoint}/vae.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let config: VaeConfig = serde_json::from_value(json["config"].clone()).unwrap();
    assert_eq!(config.z_dim, z_dim, "{checkpoint} z_dim");
    let shapes: BTreeMap<String, Vec<usize>> =
        serde_json::from_value(json["tensors"].clone()).unwrap();
    assert_eq!(
        shapes.len(),
        tensors,
        "{checkpoint}: tensor count in the manifest"
    );

    let read = Arc::new(Mutex::new(BTreeSet::new()));
    let backend = ManifestBackend {
        shapes: shapes.clone(),
        read: read.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, Device::Cpu);
    let vae = AutoencoderKLWan::new(config, vb).unwrap_or_else(|e| panic!("{checkpoint}: {e:#}"));
    assert_eq!(vae.config().latents_mean.len(), z_dim);

    let read = read.lock().unwrap();
    let unread: Vec<_> = shapes.keys().filter(|k| !read.contains(*k)).collect();
    assert!(
        unread.is_empty(),
        "{checkpoint}: the loader never read {unread:?}"
    );
}

#[test]
fn wan21_vae_loader_reads_every_checkpoint_tensor() {
    check_manifest("Wan2.1-T2V-1.3B", 16, 194);
}

#[test]
fn wan22_vae_loader_reads_every_checkpoint_tensor() {
    check_manifest("Wan2.2-TI2V-5B", 48, 196);
}
